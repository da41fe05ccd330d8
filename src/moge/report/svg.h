#pragma once
// Small dependency-free SVG plots for reports: histograms, line charts and heat maps. Every
// writer escapes its text (titles, labels), checks its input (throwing moge::Error that names
// the path and the field at fault) and writes the file atomically (temp file + rename).
#include <string>
#include <vector>

namespace moge::report {

struct Series {
  std::string label;
  std::vector<double> values;
};

// Overlaid histograms of several series over a shared range [lo, hi] with `bins` bins; y axis is
// the fraction of each series' values in a bin.
void write_histogram_svg(const std::string& path, const std::string& title, const std::string& x_label,
                         const std::vector<Series>& series, double lo, double hi, int bins);

// One line of a line chart: points (x[i], y[i]), drawn in the given order. A `scatter` series
// is markers only: no line, a marker on every point however many (points falling on the same
// pixel as an earlier one of the series are drawn once, so dense clouds stay small files).
struct LineSeries {
  std::string label;
  std::vector<double> x, y;
  bool scatter = false;
};

// Several lines over shared axes with a legend and 1-2-5 ticks. Series may have different x
// (train loss every step, validation loss every 100 steps). Points with a NaN or infinite x or y
// are skipped (the line joins their neighbours); with `log_y` the y axis is logarithmic and
// points with y <= 0 are skipped too. A series with at most kMarkerMaxPoints plotted points
// gets a circle marker on every point (so sparse series such as validation loss stand out);
// a line (not scatter) series with two or more plotted points gets one <polyline>.
// Throws moge::Error when there are no series, a series is empty, its x and y differ in
// length, or no point at all is left to plot.
inline constexpr int kMarkerMaxPoints = 60;
void write_line_chart_svg(const std::string& path, const std::string& title, const std::string& x_label,
                          const std::string& y_label, const std::vector<LineSeries>& series, bool log_y = false);

// A heat map: values[r][c] is drawn as one cell in row r (y, top to bottom) and column c (x), on
// a sequential viridis-like colour scale between the finite minimum and maximum, with a colour
// bar and, per cell, a <title> tooltip holding its exact value. Non-finite cells are grey.
// row_labels / col_labels: one per row / column, or empty for the indices 0, 1, ...; when they
// do not all fit, only every k-th label is drawn. Throws moge::Error when values is empty, rows
// are ragged, a label count does not match, or no value is finite.
void write_heatmap_svg(const std::string& path, const std::string& title, const std::string& x_label,
                       const std::string& y_label, const std::vector<std::vector<double>>& values,
                       const std::vector<std::string>& row_labels, const std::vector<std::string>& col_labels,
                       const std::string& value_label);

// Axis tick values at 1-2-5 steps (…, 0.1, 0.2, 0.5, 1, 2, 5, 10, …) inside [lo, hi], about
// `target` of them; at least two whenever hi > lo.
std::vector<double> nice_ticks(double lo, double hi, int target = 5);

// Text with & < > ' " replaced by XML entities.
std::string xml_escape(const std::string& text);

}  // namespace moge::report
