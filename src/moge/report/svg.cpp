#include "moge/report/svg.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <set>
#include <sstream>
#include <utility>

#include "moge/core/error.h"
#include "moge/core/file.h"

namespace moge::report {

namespace {

// ---- Shared pieces: numbers, colours, the document, axes, legend. ----

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
const char* color(size_t i) { return kColors[i % (sizeof kColors / sizeof kColors[0])]; }

// Approximate text widths, for margins and label spacing (sans-serif at 12 / 11 px).
double text_w(const std::string& s, double char_w = 7.0) { return char_w * double(s.size()); }

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// The shortest text that reads back as exactly v.
std::string exact(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[40];
  auto res = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, res.ptr);
}

// Smallest 1-2-5 value >= raw (raw > 0).
double nice_step(double raw) {
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / p;
  const double m = f <= 1 + 1e-9 ? 1 : f <= 2 + 1e-9 ? 2 : f <= 5 + 1e-9 ? 5 : 10;
  return m * p;
}

// Largest 1-2-5 value <= v (v > 0).
double nice_floor(double v) {
  const double p = std::pow(10.0, std::floor(std::log10(v)));
  const double f = v / p;
  const double m = f >= 5 - 1e-9 ? 5 : f >= 2 - 1e-9 ? 2 : 1;
  return m * p;
}

// Tick label precise enough that neighbouring ticks `step` apart read differently.
std::string tick_text(double v, double step) {
  if (std::abs(v) < step * 1e-9) return "0";
  int digits = int(std::floor(std::log10(std::abs(v)))) - int(std::floor(std::log10(step))) + 1;
  digits = std::clamp(digits, 1, 15);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.*g", std::max(digits, 4), v);
  return buf;
}

// A numeric axis: its range and ticks, linear or log10.
struct Axis {
  double lo = 0, hi = 1;
  bool log = false;
  std::vector<double> ticks;
  std::vector<std::string> labels;
  // Position of v along the axis in [0, 1].
  double frac(double v) const {
    return log ? (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo)) : (v - lo) / (hi - lo);
  }
};

// Linear axis over data [dlo, dhi], widened to whole 1-2-5 steps so the ends carry ticks.
Axis linear_axis(double dlo, double dhi, int target = 5) {
  if (!(dhi > dlo)) {
    const double pad = dlo != 0 ? std::abs(dlo) * 0.1 : 1.0;
    dlo -= pad, dhi += pad;
  }
  const double step = nice_step((dhi - dlo) / target);
  Axis a;
  const double k0 = std::floor(dlo / step + 1e-9), k1 = std::ceil(dhi / step - 1e-9);
  a.lo = k0 * step, a.hi = k1 * step;
  for (double k = k0; k <= k1 + 0.5; ++k) {
    const double t = std::abs(k) < 0.5 ? 0.0 : k * step;
    a.ticks.push_back(t);
    a.labels.push_back(tick_text(t, step));
  }
  return a;
}

// Log10 axis over positive data [dlo, dhi]: ends at 1-2-5 values; ticks at 1-2-5 values when it
// spans at most three decades, at powers of ten otherwise.
Axis log_axis(double dlo, double dhi) {
  Axis a;
  a.log = true;
  a.lo = nice_floor(dlo);
  a.hi = nice_step(dhi);
  if (!(a.hi > a.lo)) a.hi = nice_step(a.lo * 1.01);
  if (a.hi / a.lo <= 1000 * (1 + 1e-9)) {
    for (int e = int(std::floor(std::log10(a.lo))) - 1; e <= int(std::ceil(std::log10(a.hi))); ++e)
      for (double m : {1.0, 2.0, 5.0}) {
        const double t = m * std::pow(10.0, e);
        if (t >= a.lo * (1 - 1e-9) && t <= a.hi * (1 + 1e-9)) a.ticks.push_back(t);
      }
  } else {
    const int e0 = int(std::floor(std::log10(a.lo) + 1e-9)), e1 = int(std::ceil(std::log10(a.hi) - 1e-9));
    const int de = std::max(1, (e1 - e0 + 7) / 8);
    const int n = (e1 - e0 + de - 1) / de;
    a.lo = std::pow(10.0, e0), a.hi = std::pow(10.0, e0 + n * de);
    for (int i = 0; i <= n; ++i) a.ticks.push_back(std::pow(10.0, e0 + i * de));
  }
  for (double t : a.ticks) a.labels.push_back(num(t));
  return a;
}

// The page around a plot area: margins in pixels.
struct Frame {
  double width, height, left, right, top, bottom;
  double plot_w() const { return width - left - right; }
  double plot_h() const { return height - top - bottom; }
  double x(double frac) const { return left + plot_w() * frac; }
  double y(double frac) const { return top + plot_h() * (1 - frac); }
};

void begin_svg(std::ostringstream& svg, double width, double height, const std::string& title) {
  svg << "<?xml version='1.0' encoding='UTF-8'?>\n"
      << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height << "' viewBox='0 0 "
      << width << ' ' << height << "' font-family='sans-serif' font-size='12'>\n"
      << "<rect width='100%' height='100%' fill='white'/>\n"
      << "<text x='" << width / 2 << "' y='22' text-anchor='middle' font-size='15'>" << xml_escape(title)
      << "</text>\n";
}

void end_svg_and_write(const std::string& path, std::ostringstream& svg) {
  svg << "</svg>\n";
  write_file_atomically(path, svg.str());
}

// Titles of the x axis (below) and y axis (rotated, at the left edge).
void draw_axis_titles(std::ostringstream& svg, const Frame& f, const std::string& x_label, const std::string& y_label,
                      double x_title_y) {
  const double cy = f.top + f.plot_h() / 2;
  if (!x_label.empty())
    svg << "<text x='" << f.left + f.plot_w() / 2 << "' y='" << x_title_y << "' text-anchor='middle'>"
        << xml_escape(x_label) << "</text>\n";
  if (!y_label.empty())
    svg << "<text x='16' y='" << cy << "' transform='rotate(-90 16 " << cy << ")' text-anchor='middle'>"
        << xml_escape(y_label) << "</text>\n";
}

// Axis lines on the left and bottom of the plot area, tick marks and tick labels; with `grid`,
// light lines across the plot at every tick.
void draw_axes(std::ostringstream& svg, const Frame& f, const Axis& xa, const Axis& ya, bool grid) {
  const double x0 = f.left, x1 = f.left + f.plot_w(), y0 = f.top + f.plot_h(), y1 = f.top;
  for (size_t i = 0; i < xa.ticks.size(); ++i) {
    const double px = f.x(xa.frac(xa.ticks[i]));
    if (grid) svg << "<line x1='" << px << "' y1='" << y1 << "' x2='" << px << "' y2='" << y0 << "' stroke='#e6e6e6'/>\n";
    svg << "<line x1='" << px << "' y1='" << y0 << "' x2='" << px << "' y2='" << y0 + 5 << "' stroke='black'/>\n"
        << "<text x='" << px << "' y='" << y0 + 18 << "' text-anchor='middle'>" << xml_escape(xa.labels[i])
        << "</text>\n";
  }
  for (size_t i = 0; i < ya.ticks.size(); ++i) {
    const double py = f.y(ya.frac(ya.ticks[i]));
    if (grid) svg << "<line x1='" << x0 << "' y1='" << py << "' x2='" << x1 << "' y2='" << py << "' stroke='#e6e6e6'/>\n";
    svg << "<line x1='" << x0 - 5 << "' y1='" << py << "' x2='" << x0 << "' y2='" << py << "' stroke='black'/>\n"
        << "<text x='" << x0 - 8 << "' y='" << py + 4 << "' text-anchor='end'>" << xml_escape(ya.labels[i])
        << "</text>\n";
  }
  svg << "<line x1='" << x0 << "' y1='" << y0 << "' x2='" << x1 << "' y2='" << y0 << "' stroke='black'/>\n"
      << "<line x1='" << x0 << "' y1='" << y1 << "' x2='" << x0 << "' y2='" << y0 << "' stroke='black'/>\n";
}

// Left margin that fits the widest y tick label and the rotated y title.
double left_margin(const Axis& ya) {
  double w = 0;
  for (const auto& s : ya.labels) w = std::max(w, text_w(s));
  return std::max(60.0, 40.0 + w);
}

struct LegendEntry {
  std::string label;
  const char* color;
  enum Style { kSwatch, kLine, kLineMarker, kMarker } style;
};

double legend_w(const std::vector<LegendEntry>& entries) {
  double w = 0;
  for (const auto& e : entries) w = std::max(w, text_w(e.label));
  return w + 44;
}
double legend_h(const std::vector<LegendEntry>& entries) { return 18.0 * double(entries.size()) + 8; }

// A boxed legend with its top-left corner at (x, y).
void draw_legend(std::ostringstream& svg, double x, double y, const std::vector<LegendEntry>& entries) {
  svg << "<rect x='" << x << "' y='" << y << "' width='" << legend_w(entries) << "' height='" << legend_h(entries)
      << "' fill='white' fill-opacity='0.85' stroke='#999999'/>\n";
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& e = entries[i];
    const double cy = y + 13 + 18.0 * double(i);
    if (e.style == LegendEntry::kSwatch) {
      svg << "<rect x='" << x + 8 << "' y='" << cy - 6 << "' width='12' height='12' fill='" << e.color << "'/>\n";
    } else if (e.style == LegendEntry::kMarker) {
      svg << "<circle cx='" << x + 17 << "' cy='" << cy << "' r='3' fill='" << e.color << "'/>\n";
    } else {
      svg << "<line x1='" << x + 6 << "' y1='" << cy << "' x2='" << x + 28 << "' y2='" << cy << "' stroke='" << e.color
          << "' stroke-width='2'/>\n";
      if (e.style == LegendEntry::kLineMarker)
        svg << "<circle cx='" << x + 17 << "' cy='" << cy << "' r='3' fill='" << e.color << "'/>\n";
    }
    svg << "<text x='" << x + 34 << "' y='" << cy + 4 << "'>" << xml_escape(e.label) << "</text>\n";
  }
}

// Pixels that plotted marks cover, sampled about every 4 px, for placing the legend.
using Samples = std::vector<std::pair<double, double>>;
void sample_segment(Samples& out, double x1, double y1, double x2, double y2) {
  const int n = std::max(1, int(std::ceil(std::hypot(x2 - x1, y2 - y1) / 4)));
  for (int i = 0; i <= n; ++i) out.emplace_back(x1 + (x2 - x1) * i / n, y1 + (y2 - y1) * i / n);
}
void sample_box(Samples& out, double x, double y, double w, double h) {
  const int nx = std::max(1, int(std::ceil(w / 4))), ny = std::max(1, int(std::ceil(h / 4)));
  for (int i = 0; i <= nx; ++i)
    for (int j = 0; j <= ny; ++j) out.emplace_back(x + w * i / nx, y + h * j / ny);
}

// Top-left corner for a w x h legend: the inner corner of the plot (top right, top left, bottom
// right, bottom left, in that preference) that covers the fewest sampled marks.
std::pair<double, double> legend_corner(const Frame& f, double w, double h, const Samples& marks) {
  const double inset = 8, xr = f.left + f.plot_w() - w - inset, xl = f.left + inset;
  const double yt = f.top + inset, yb = f.top + f.plot_h() - h - inset;
  const std::array<std::pair<double, double>, 4> corners = {{{xr, yt}, {xl, yt}, {xr, yb}, {xl, yb}}};
  size_t best = 0, best_hits = SIZE_MAX;
  for (size_t c = 0; c < corners.size(); ++c) {
    size_t hits = 0;
    for (const auto& [u, v] : marks)
      hits += u >= corners[c].first && u <= corners[c].first + w && v >= corners[c].second && v <= corners[c].second + h;
    if (hits < best_hits) best = c, best_hits = hits;
  }
  return corners[best];
}

// Sequential colour scale: viridis sampled at 0, 1/4, 1/2, 3/4, 1, interpolated in RGB.
constexpr std::array<std::array<int, 3>, 5> kScale = {
    {{0x44, 0x01, 0x54}, {0x3b, 0x52, 0x8b}, {0x21, 0x91, 0x8c}, {0x5e, 0xc9, 0x62}, {0xfd, 0xe7, 0x25}}};

std::string hex(int r, int g, int b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", r, g, b);
  return buf;
}

std::string scale_color(double t) {
  t = std::clamp(t, 0.0, 1.0) * double(kScale.size() - 1);
  const size_t i = std::min(size_t(t), kScale.size() - 2);
  const double u = t - double(i);
  int c[3];
  for (int k = 0; k < 3; ++k) c[k] = int(std::lround(kScale[i][k] + (kScale[i + 1][k] - kScale[i][k]) * u));
  return hex(c[0], c[1], c[2]);
}

// Smallest step k (1, 2, 4, 5, 8, 10, 16, 20, 25, ...: 1-2-5 values and powers of two) such that
// n labels every k-th one fit in `space` pixels with `each` pixels per label.
int label_stride(size_t n, double space, double each) {
  std::vector<long> steps;
  for (long p = 1; p <= long(n) * 10; p *= 10)
    for (long m : {1, 2, 5}) steps.push_back(m * p);
  for (long p = 1; p <= long(n) * 2; p *= 2) steps.push_back(p);
  steps.push_back(25);
  std::sort(steps.begin(), steps.end());
  for (long k : steps)
    if (double((long(n) + k - 1) / k) * each <= space) return int(k);
  return int(std::max<size_t>(n, 1));
}

}  // namespace

std::string xml_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '\'': out += "&apos;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::vector<double> nice_ticks(double lo, double hi, int target) {
  check(std::isfinite(lo) && std::isfinite(hi) && hi >= lo, "nice_ticks: bad range [" + exact(lo) + ", " + exact(hi) + "]");
  if (hi == lo) return {lo};
  double step = nice_step((hi - lo) / std::max(target, 1));
  for (;;) {
    std::vector<double> ticks;
    const double k0 = std::ceil(lo / step - 1e-9), k1 = std::floor(hi / step + 1e-9);
    for (double k = k0; k <= k1 + 0.5; ++k) ticks.push_back(std::abs(k) < 0.5 ? 0.0 : k * step);
    if (ticks.size() >= 2) return ticks;
    step = nice_step(step * 0.4);  // the next smaller 1-2-5 step
  }
}

void write_histogram_svg(const std::string& path, const std::string& title, const std::string& x_label,
                         const std::vector<Series>& series, double lo, double hi, int bins) {
  check(bins > 0 && hi > lo, path + ": empty histogram range");
  std::vector<std::vector<double>> freq(series.size(), std::vector<double>(bins, 0.0));
  double peak = 1e-9;
  for (size_t s = 0; s < series.size(); ++s) {
    for (double v : series[s].values) {
      int b = std::clamp(int((v - lo) / (hi - lo) * bins), 0, bins - 1);
      freq[s][b] += 1.0 / double(series[s].values.size());
    }
    peak = std::max(peak, *std::max_element(freq[s].begin(), freq[s].end()));
  }

  Axis xa;  // the bin range itself, ticks at fifths
  xa.lo = lo, xa.hi = hi;
  for (int i = 0; i <= 5; ++i) {
    xa.ticks.push_back(lo + (hi - lo) * i / 5);
    xa.labels.push_back(num(xa.ticks.back()));
  }
  const Axis ya = linear_axis(0.0, peak);
  const Frame f{720, 420, left_margin(ya), 20, 40, 50};

  std::ostringstream svg;
  begin_svg(svg, f.width, f.height, title);
  draw_axes(svg, f, xa, ya, false);
  draw_axis_titles(svg, f, x_label, "fraction of trials", f.height - 12);
  // Bars, side by side inside each bin.
  const double bin_w = f.plot_w() / bins, bar_w = bin_w / double(std::max<size_t>(series.size(), 1));
  std::vector<LegendEntry> legend;
  Samples marks;
  for (size_t s = 0; s < series.size(); ++s) {
    for (int b = 0; b < bins; ++b) {
      if (freq[s][b] <= 0) continue;
      const double h = f.plot_h() * ya.frac(freq[s][b]), x = f.left + b * bin_w + double(s) * bar_w;
      svg << "<rect x='" << x << "' y='" << f.top + f.plot_h() - h << "' width='" << bar_w << "' height='" << h
          << "' fill='" << color(s) << "' fill-opacity='0.85'/>\n";
      sample_box(marks, x, f.top + f.plot_h() - h, bar_w, h);
    }
    legend.push_back({series[s].label, color(s), LegendEntry::kSwatch});
  }
  if (!legend.empty()) {
    const auto [lx, ly] = legend_corner(f, legend_w(legend), legend_h(legend), marks);
    draw_legend(svg, lx, ly, legend);
  }
  end_svg_and_write(path, svg);
}

void write_line_chart_svg(const std::string& path, const std::string& title, const std::string& x_label,
                          const std::string& y_label, const std::vector<LineSeries>& series, bool log_y) {
  check(!series.empty(), path + ": line chart has no series");
  // The points each series plots: finite, and positive on a log axis.
  std::vector<std::vector<std::pair<double, double>>> pts(series.size());
  double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
  for (size_t s = 0; s < series.size(); ++s) {
    const auto& ls = series[s];
    const std::string name = path + ": series " + std::to_string(s) + " '" + ls.label + "'";
    check(!ls.x.empty() || !ls.y.empty(), name + " is empty");
    check(ls.x.size() == ls.y.size(), name + " has " + std::to_string(ls.x.size()) + " x values and " +
                                          std::to_string(ls.y.size()) + " y values");
    for (size_t i = 0; i < ls.x.size(); ++i) {
      const double x = ls.x[i], y = ls.y[i];
      if (!std::isfinite(x) || !std::isfinite(y) || (log_y && y <= 0)) continue;
      pts[s].emplace_back(x, y);
      xlo = std::min(xlo, x), xhi = std::max(xhi, x), ylo = std::min(ylo, y), yhi = std::max(yhi, y);
    }
  }
  check(xlo <= xhi, path + (log_y ? ": no finite positive point to plot on a log y axis" : ": no finite point to plot"));

  const Axis xa = linear_axis(xlo, xhi);
  const Axis ya = log_y ? log_axis(ylo, yhi) : linear_axis(ylo, yhi);
  const Frame f{760, 440, left_margin(ya), 24, 40, 52};
  auto px = [&](double x) { return f.x(xa.frac(x)); };
  auto py = [&](double y) { return f.y(ya.frac(y)); };

  std::ostringstream svg;
  begin_svg(svg, f.width, f.height, title);
  draw_axes(svg, f, xa, ya, true);
  draw_axis_titles(svg, f, x_label, y_label, f.height - 12);

  std::vector<LegendEntry> legend;
  for (size_t s = 0; s < series.size(); ++s) {
    if (series[s].scatter) {
      std::set<std::pair<long, long>> drawn;  // pixels already marked
      for (const auto& [x, y] : pts[s])
        if (drawn.emplace(std::lround(px(x)), std::lround(py(y))).second)
          svg << "<circle cx='" << px(x) << "' cy='" << py(y) << "' r='2.5' fill='" << color(s)
              << "' fill-opacity='0.6'/>\n";
      legend.push_back({series[s].label, color(s), LegendEntry::kMarker});
      continue;
    }
    const bool markers = pts[s].size() <= size_t(kMarkerMaxPoints);
    if (pts[s].size() >= 2) {
      svg << "<polyline fill='none' stroke='" << color(s) << "' stroke-width='1.5' stroke-linejoin='round' points='";
      for (size_t i = 0; i < pts[s].size(); ++i)
        svg << (i ? " " : "") << px(pts[s][i].first) << ',' << py(pts[s][i].second);
      svg << "'/>\n";
    }
    if (markers)
      for (const auto& [x, y] : pts[s])
        svg << "<circle cx='" << px(x) << "' cy='" << py(y) << "' r='3' fill='" << color(s) << "'/>\n";
    legend.push_back({series[s].label, color(s), markers ? LegendEntry::kLineMarker : LegendEntry::kLine});
  }

  // Legend in the plot corner that covers the fewest lines and markers.
  Samples marks;
  for (size_t s = 0; s < pts.size(); ++s)
    for (size_t i = 0; i < pts[s].size(); ++i) {
      const auto& sp = pts[s];
      const double u = px(sp[i].first), v = py(sp[i].second);
      if (i == 0 || series[s].scatter) marks.emplace_back(u, v);
      else sample_segment(marks, px(sp[i - 1].first), py(sp[i - 1].second), u, v);
    }
  const auto [lx, ly] = legend_corner(f, legend_w(legend), legend_h(legend), marks);
  draw_legend(svg, lx, ly, legend);
  end_svg_and_write(path, svg);
}

void write_heatmap_svg(const std::string& path, const std::string& title, const std::string& x_label,
                       const std::string& y_label, const std::vector<std::vector<double>>& values,
                       const std::vector<std::string>& row_labels, const std::vector<std::string>& col_labels,
                       const std::string& value_label) {
  check(!values.empty() && !values[0].empty(), path + ": heat map has no values");
  const size_t rows = values.size(), cols = values[0].size();
  for (size_t r = 0; r < rows; ++r)
    check(values[r].size() == cols, path + ": heat map row " + std::to_string(r) + " has " +
                                        std::to_string(values[r].size()) + " values, row 0 has " + std::to_string(cols));
  check(row_labels.empty() || row_labels.size() == rows, path + ": " + std::to_string(row_labels.size()) +
                                                             " row labels for " + std::to_string(rows) + " rows");
  check(col_labels.empty() || col_labels.size() == cols, path + ": " + std::to_string(col_labels.size()) +
                                                             " column labels for " + std::to_string(cols) + " columns");
  double vmin = INFINITY, vmax = -INFINITY;
  for (const auto& row : values)
    for (double v : row)
      if (std::isfinite(v)) vmin = std::min(vmin, v), vmax = std::max(vmax, v);
  check(vmin <= vmax, path + ": heat map has no finite value");
  auto row_label = [&](size_t r) { return row_labels.empty() ? std::to_string(r) : row_labels[r]; };
  auto col_label = [&](size_t c) { return col_labels.empty() ? std::to_string(c) : col_labels[c]; };

  // Layout: cells sized to fit about 768 x 480 pixels; labels at the left and below; colour bar
  // at the right.
  const double cell_w = std::clamp(768.0 / double(cols), 2.0, 36.0), cell_h = std::clamp(480.0 / double(rows), 2.0, 28.0);
  const double plot_w = cell_w * double(cols), plot_h = std::max(cell_h * double(rows), 120.0);
  double row_w = 0, col_w = 0;
  for (size_t r = 0; r < rows; ++r) row_w = std::max(row_w, text_w(row_label(r), 6.5));
  for (size_t c = 0; c < cols; ++c) col_w = std::max(col_w, text_w(col_label(c), 6.5));
  const int row_k = label_stride(rows, cell_h * double(rows), 13);
  const int col_k = label_stride(cols, plot_w, col_w + 8);
  const std::string min_text = num(vmin), max_text = num(vmax);
  const double bar_gap = 16, bar_w = 14;
  const double right = bar_gap + bar_w + 8 + std::max(text_w(min_text), text_w(max_text)) + 30;
  Frame f{0, 0, 34 + row_w, right, 40, 56};
  f.width = std::max(f.left + plot_w + f.right, text_w(title, 8.5) + 40);
  f.height = f.top + plot_h + f.bottom;
  const double x0 = f.left, y0 = f.top;

  std::ostringstream svg;
  begin_svg(svg, f.width, f.height, title);
  svg << "<defs><linearGradient id='colorbar' x1='0' y1='1' x2='0' y2='0'>";
  for (size_t i = 0; i < kScale.size(); ++i)
    svg << "<stop offset='" << double(i) / double(kScale.size() - 1) << "' stop-color='"
        << hex(kScale[i][0], kScale[i][1], kScale[i][2]) << "'/>";
  svg << "</linearGradient></defs>\n";

  // Cells, each with its exact value as a tooltip.
  const std::string ytag = y_label.empty() ? "" : xml_escape(y_label) + " ";
  const std::string xtag = x_label.empty() ? "" : xml_escape(x_label) + " ";
  const std::string vtag = value_label.empty() ? "" : xml_escape(value_label) + " = ";
  svg << "<g shape-rendering='crispEdges'>\n";
  for (size_t r = 0; r < rows; ++r) {
    const std::string rtag = ytag + xml_escape(row_label(r)) + ", " + xtag;
    for (size_t c = 0; c < cols; ++c) {
      const double v = values[r][c];
      const std::string fill =
          !std::isfinite(v) ? "#bbbbbb" : scale_color(vmax > vmin ? (v - vmin) / (vmax - vmin) : 0.5);
      svg << "<rect x='" << x0 + cell_w * double(c) << "' y='" << y0 + cell_h * double(r) << "' width='" << cell_w
          << "' height='" << cell_h << "' fill='" << fill << "'><title>" << rtag << xml_escape(col_label(c)) << ": "
          << vtag << exact(v) << "</title></rect>\n";
    }
  }
  svg << "</g>\n";

  // Row labels (every row_k-th) at the left, column labels (every col_k-th) below.
  for (size_t r = 0; r < rows; r += size_t(row_k))
    svg << "<text x='" << x0 - 6 << "' y='" << y0 + cell_h * (double(r) + 0.5) + 4
        << "' text-anchor='end' font-size='11'>" << xml_escape(row_label(r)) << "</text>\n";
  const double grid_bottom = y0 + cell_h * double(rows);
  for (size_t c = 0; c < cols; c += size_t(col_k))
    svg << "<text x='" << x0 + cell_w * (double(c) + 0.5) << "' y='" << grid_bottom + 15
        << "' text-anchor='middle' font-size='11'>" << xml_escape(col_label(c)) << "</text>\n";
  Frame titles = f;
  titles.right = f.width - f.left - plot_w;  // centre the x title under the grid
  draw_axis_titles(svg, titles, x_label, y_label, grid_bottom + 38);

  // Colour bar: max at the top, min at the bottom.
  const double bx = x0 + plot_w + bar_gap;
  svg << "<rect x='" << bx << "' y='" << y0 << "' width='" << bar_w << "' height='" << plot_h
      << "' fill='url(#colorbar)' stroke='#999999'/>\n"
      << "<text x='" << bx + bar_w + 5 << "' y='" << y0 + 10 << "'>" << xml_escape(max_text) << "</text>\n"
      << "<text x='" << bx + bar_w + 5 << "' y='" << y0 + plot_h << "'>" << xml_escape(min_text) << "</text>\n";
  if (!value_label.empty()) {
    const double lx = f.width - 12, ly = y0 + plot_h / 2;
    svg << "<text x='" << lx << "' y='" << ly << "' transform='rotate(-90 " << lx << ' ' << ly
        << ")' text-anchor='middle'>" << xml_escape(value_label) << "</text>\n";
  }
  end_svg_and_write(path, svg);
}

}  // namespace moge::report
