#include "moge/report/svg.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "moge/core/error.h"
#include "moge/core/file.h"

namespace moge::report {

namespace {
const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}
}  // namespace

void write_histogram_svg(const std::string& path, const std::string& title, const std::string& x_label,
                         const std::vector<Series>& series, double lo, double hi, int bins) {
  check(bins > 0 && hi > lo, path + ": empty histogram range");
  const double width = 720, height = 420, left = 60, right = 20, top = 40, bottom = 50;
  const double plot_w = width - left - right, plot_h = height - top - bottom;

  std::vector<std::vector<double>> freq(series.size(), std::vector<double>(bins, 0.0));
  double peak = 1e-9;
  for (size_t s = 0; s < series.size(); ++s) {
    for (double v : series[s].values) {
      int b = std::clamp(int((v - lo) / (hi - lo) * bins), 0, bins - 1);
      freq[s][b] += 1.0 / double(series[s].values.size());
    }
    peak = std::max(peak, *std::max_element(freq[s].begin(), freq[s].end()));
  }

  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height
      << "' font-family='sans-serif' font-size='12'>\n"
      << "<rect width='100%' height='100%' fill='white'/>\n"
      << "<text x='" << width / 2 << "' y='22' text-anchor='middle' font-size='15'>" << title << "</text>\n";
  // Axes with ticks.
  svg << "<line x1='" << left << "' y1='" << top + plot_h << "' x2='" << left + plot_w << "' y2='" << top + plot_h
      << "' stroke='black'/>\n<line x1='" << left << "' y1='" << top << "' x2='" << left << "' y2='" << top + plot_h
      << "' stroke='black'/>\n";
  for (int i = 0; i <= 5; ++i) {
    double fx = left + plot_w * i / 5, fy = top + plot_h - plot_h * i / 5;
    svg << "<text x='" << fx << "' y='" << top + plot_h + 16 << "' text-anchor='middle'>" << num(lo + (hi - lo) * i / 5)
        << "</text>\n<text x='" << left - 6 << "' y='" << fy + 4 << "' text-anchor='end'>" << num(peak * i / 5)
        << "</text>\n";
  }
  svg << "<text x='" << left + plot_w / 2 << "' y='" << height - 12 << "' text-anchor='middle'>" << x_label
      << "</text>\n<text x='14' y='" << top + plot_h / 2 << "' transform='rotate(-90 14 " << top + plot_h / 2
      << ")' text-anchor='middle'>fraction of trials</text>\n";
  // Bars, side by side inside each bin.
  const double bin_w = plot_w / bins, bar_w = bin_w / std::max<size_t>(series.size(), 1);
  for (size_t s = 0; s < series.size(); ++s) {
    const char* color = kColors[s % 6];
    for (int b = 0; b < bins; ++b) {
      if (freq[s][b] <= 0) continue;
      double h = plot_h * freq[s][b] / peak;
      svg << "<rect x='" << left + b * bin_w + s * bar_w << "' y='" << top + plot_h - h << "' width='" << bar_w
          << "' height='" << h << "' fill='" << color << "' fill-opacity='0.85'/>\n";
    }
    svg << "<rect x='" << left + plot_w - 170 << "' y='" << top + 8 + 18 * s << "' width='12' height='12' fill='"
        << color << "'/>\n<text x='" << left + plot_w - 152 << "' y='" << top + 18 + 18 * s << "'>" << series[s].label
        << "</text>\n";
  }
  svg << "</svg>\n";
  write_file_atomically(path, svg.str());
}

}  // namespace moge::report
