#pragma once
// Small dependency-free SVG plots for reports: histograms, and later line charts and heat maps.
#include <string>
#include <vector>

namespace moge::report {

struct Series {
  std::string label;
  std::vector<double> values;
};

// Overlaid histograms of several series over a shared range [lo, hi] with `bins` bins; y axis is
// the fraction of each series' values in a bin. Written atomically (temp file + rename).
void write_histogram_svg(const std::string& path, const std::string& title, const std::string& x_label,
                         const std::vector<Series>& series, double lo, double hi, int bins);

}  // namespace moge::report
