// SVG plots: files are written, well-formed XML, escaped, with the expected elements; bad input
// throws moge::Error naming the path and the field.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "moge/core/error.h"
#include "moge/report/svg.h"

namespace moge::report {
namespace {

namespace fs = std::filesystem;
const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

// A path in the test's temp folder with no file there yet (runs do not see each other's files).
std::string tmp_path(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / "moge_report_svg_test";
  fs::create_directories(dir);
  fs::remove(dir / name);
  return (dir / name).string();
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A minimal XML well-formedness check: balanced, properly nested tags, quoted attributes without
// '<' and without duplicates, entities only &amp; &lt; &gt; &apos; &quot; &#...;, one root
// element. Returns "" when well formed, else what is wrong and where.
std::string xml_problem(const std::string& x) {
  auto name_char = [](char c) { return std::isalnum((unsigned char)c) || c == '_' || c == ':' || c == '-' || c == '.'; };
  auto bad_entity = [&](size_t i) {  // x[i] == '&'
    static const std::regex ent("&(amp|lt|gt|apos|quot|#[0-9]+|#x[0-9a-fA-F]+);");
    const size_t semi = x.find(';', i);
    return semi == std::string::npos || semi - i > 10 || !std::regex_match(x.substr(i, semi - i + 1), ent);
  };
  std::vector<std::string> stack;
  bool root_done = false, root_seen = false;
  size_t i = 0;
  auto at = [&](const std::string& what) { return what + " at offset " + std::to_string(i); };
  while (i < x.size()) {
    const char c = x[i];
    if (c != '<') {
      if (c == '&' && bad_entity(i)) return at("bad entity");
      if (stack.empty() && !std::isspace((unsigned char)c)) return at("text outside the root element");
      ++i;
      continue;
    }
    if (x.compare(i, 2, "<?") == 0) {
      const size_t e = x.find("?>", i);
      if (e == std::string::npos || root_seen) return at("bad processing instruction");
      i = e + 2;
      continue;
    }
    if (x.compare(i, 4, "<!--") == 0) {
      const size_t e = x.find("-->", i);
      if (e == std::string::npos) return at("unterminated comment");
      i = e + 3;
      continue;
    }
    if (x.compare(i, 2, "</") == 0) {
      size_t j = i + 2;
      while (j < x.size() && name_char(x[j])) ++j;
      const std::string name = x.substr(i + 2, j - i - 2);
      while (j < x.size() && std::isspace((unsigned char)x[j])) ++j;
      if (j >= x.size() || x[j] != '>') return at("bad end tag");
      if (stack.empty() || stack.back() != name) return at("end tag </" + name + "> does not match");
      stack.pop_back();
      if (stack.empty()) root_done = true;
      i = j + 1;
      continue;
    }
    // Start tag.
    size_t j = i + 1;
    while (j < x.size() && name_char(x[j])) ++j;
    const std::string name = x.substr(i + 1, j - i - 1);
    if (name.empty() || (!std::isalpha((unsigned char)name[0]) && name[0] != '_')) return at("bad tag name");
    if (stack.empty() && root_done) return at("second root element");
    std::set<std::string> attrs;
    bool self_close = false;
    for (;;) {
      const size_t before = j;
      while (j < x.size() && std::isspace((unsigned char)x[j])) ++j;
      if (j >= x.size()) return at("unterminated start tag");
      if (x[j] == '>') { ++j; break; }
      if (x.compare(j, 2, "/>") == 0) { j += 2; self_close = true; break; }
      if (j == before) return at("attributes not separated by space");
      size_t k = j;
      while (k < x.size() && name_char(x[k])) ++k;
      const std::string attr = x.substr(j, k - j);
      if (attr.empty() || k >= x.size() || x[k] != '=') return at("bad attribute in <" + name + ">");
      if (!attrs.insert(attr).second) return at("duplicate attribute " + attr);
      ++k;
      if (k >= x.size() || (x[k] != '\'' && x[k] != '"')) return at("unquoted attribute " + attr);
      const char q = x[k];
      const size_t end = x.find(q, k + 1);
      if (end == std::string::npos) return at("unterminated attribute " + attr);
      for (size_t m = k + 1; m < end; ++m) {
        if (x[m] == '<') return at("'<' in attribute " + attr);
        if (x[m] == '&' && bad_entity(m)) return at("bad entity in attribute " + attr);
      }
      j = end + 1;
    }
    root_seen = true;
    if (self_close) {
      if (stack.empty()) root_done = true;
    } else {
      stack.push_back(name);
    }
    i = j;
  }
  if (!root_seen) return "no root element";
  if (!stack.empty()) return "unclosed <" + stack.back() + ">";
  return "";
}

// Well formed by the check above, and by xmllint when it is installed.
void expect_well_formed(const std::string& path) {
  ASSERT_TRUE(fs::exists(path)) << path;
  EXPECT_FALSE(fs::exists(path + ".tmp")) << "temp file left behind";
  EXPECT_EQ(xml_problem(slurp(path)), "") << path;
  if (std::system("command -v xmllint >/dev/null 2>&1") == 0) {
    EXPECT_EQ(std::system(("xmllint --noout '" + path + "'").c_str()), 0) << path;
  }
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

// The value of `attr` in every <tag ...> start tag, in document order.
std::vector<std::string> attr_values(const std::string& svg, const std::string& tag, const std::string& attr) {
  std::vector<std::string> out;
  for (size_t p = svg.find("<" + tag + " "); p != std::string::npos; p = svg.find("<" + tag + " ", p + 1)) {
    const std::string start = svg.substr(p, svg.find('>', p) - p);
    const size_t a = start.find(" " + attr + "='");
    if (a == std::string::npos) continue;
    const size_t v = a + attr.size() + 3;
    out.push_back(start.substr(v, start.find('\'', v) - v));
  }
  return out;
}

// The message of the moge::Error that f throws, or "" when it throws none.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// ---- The well-formedness check itself must catch broken documents. ----

TEST(SvgWellFormedCheck, AcceptsGoodAndRejectsBrokenXml) {
  EXPECT_EQ(xml_problem("<?xml version='1.0'?>\n<svg a='1' b=\"x &amp; y\"><g><text>a &lt; b</text></g><rect/></svg>\n"), "");
  EXPECT_NE(xml_problem("<svg><g></svg>"), "");
  EXPECT_NE(xml_problem("<svg><g></g>"), "");
  EXPECT_NE(xml_problem("<svg><text>a < b</text></svg>"), "");
  EXPECT_NE(xml_problem("<svg><text>a & b</text></svg>"), "");
  EXPECT_NE(xml_problem("<svg a='1' a='2'/>"), "");
  EXPECT_NE(xml_problem("<svg a='x<y'/>"), "");
  EXPECT_NE(xml_problem("<svg a=1/>"), "");
  EXPECT_NE(xml_problem("<svg/><svg/>"), "");
  EXPECT_NE(xml_problem(""), "");
}

TEST(SvgEscape, EscapesMarkupCharacters) {
  EXPECT_EQ(xml_escape("a<b & c>'d\""), "a&lt;b &amp; c&gt;&apos;d&quot;");
  EXPECT_EQ(xml_escape("plain"), "plain");
}

TEST(SvgNiceTicks, StepsAreOneTwoFive) {
  auto expect_ticks = [](const std::vector<double>& got, const std::vector<double>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-12) << i;
  };
  expect_ticks(nice_ticks(0, 1), {0, 0.2, 0.4, 0.6, 0.8, 1});
  expect_ticks(nice_ticks(0, 97), {0, 20, 40, 60, 80});
  expect_ticks(nice_ticks(-3, 12), {0, 5, 10});
  expect_ticks(nice_ticks(-3, 12, 8), {-2, 0, 2, 4, 6, 8, 10, 12});
  for (auto [lo, hi] : std::vector<std::pair<double, double>>{{3.2, 4.8}, {0.001, 0.0013}, {1e6, 1.7e6}, {-5, -4.9}}) {
    const auto t = nice_ticks(lo, hi);
    ASSERT_GE(t.size(), 2u) << lo << ".." << hi;
    const double step = t[1] - t[0];
    const double mant = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));
    EXPECT_TRUE(std::abs(mant - 1) < 1e-6 || std::abs(mant - 2) < 1e-6 || std::abs(mant - 5) < 1e-6) << step;
    EXPECT_GE(t.front(), lo - 1e-12);
    EXPECT_LE(t.back(), hi + 1e-12);
  }
}

// ---- Line charts. ----

TEST(SvgLineChart, DenseAndSparseSeriesWithLegend) {
  const std::string path = tmp_path("loss.svg");
  LineSeries train{"train <loss> & co", {}, {}}, val{"validation", {}, {}};
  for (int s = 0; s < 300; ++s) train.x.push_back(s), train.y.push_back(5.0 * std::exp(-s / 100.0) + 1);
  for (int s = 0; s < 300; s += 100) val.x.push_back(s), val.y.push_back(5.2 * std::exp(-s / 100.0) + 1.1);
  write_line_chart_svg(path, "Loss & <friends>", "step", "loss", {train, val});
  expect_well_formed(path);
  const std::string svg = slurp(path);
  EXPECT_NE(svg.find(">train &lt;loss&gt; &amp; co</text>"), std::string::npos);
  EXPECT_NE(svg.find(">validation</text>"), std::string::npos);
  EXPECT_NE(svg.find(">Loss &amp; &lt;friends&gt;</text>"), std::string::npos);
  EXPECT_NE(svg.find(">step</text>"), std::string::npos);
  EXPECT_NE(svg.find(">loss</text>"), std::string::npos);
  // One polyline a series; markers only on the sparse series: 3 points + its legend sample.
  EXPECT_EQ(count(svg, "<polyline"), 2u);
  EXPECT_EQ(count(svg, "<circle"), 3u + 1u);
  EXPECT_EQ(count(svg, "<rect"), 2u);  // background + legend box
  EXPECT_EQ(attr_values(svg, "polyline", "stroke").size(), 2u);
  EXPECT_NE(attr_values(svg, "polyline", "stroke")[0], attr_values(svg, "polyline", "stroke")[1]);
  // x axis 0..299 gets 1-2-5 ticks ending at 300.
  EXPECT_NE(svg.find(">300</text>"), std::string::npos);
  EXPECT_NE(svg.find(">100</text>"), std::string::npos);
}

TEST(SvgLineChart, ScatterSeriesIsMarkersOncePerPixel) {
  // 201 points on 4 distinct places (x = 0..3, y = 10x; one more a billionth off x = 1, the same
  // pixel): 4 markers, no line; the line series beside it keeps its polyline and 2 markers.
  const std::string path = tmp_path("scatter.svg");
  LineSeries cloud{"cloud", {}, {}, true}, front{"front", {0, 3}, {0, 30}};
  for (int i = 0; i < 200; ++i) cloud.x.push_back(i % 4), cloud.y.push_back(10.0 * (i % 4));
  cloud.x.push_back(1 + 1e-9), cloud.y.push_back(10);
  write_line_chart_svg(path, "t", "x", "y", {cloud, front});
  expect_well_formed(path);
  const std::string svg = slurp(path);
  EXPECT_EQ(count(svg, "<polyline"), 1u);
  EXPECT_EQ(count(svg, "fill-opacity='0.6'"), 4u);          // the cloud's markers
  EXPECT_EQ(count(svg, "<circle"), 4u + 2u + 2u);            // cloud, front, one legend sample each
  EXPECT_EQ(count(svg, "stroke-width='2'"), 1u);             // only the front's legend has a line
}

TEST(SvgLineChart, SkipsNonFinitePoints) {
  const std::string path = tmp_path("nan.svg");
  write_line_chart_svg(path, "t", "x", "y", {{"a", {0, 1, 2, 3, 4, kNaN}, {1, kNaN, 3, kInf, 5, 6}}});
  expect_well_formed(path);
  const std::string svg = slurp(path);
  EXPECT_EQ(count(svg, "<circle"), 3u + 1u);  // x = 0, 2, 4 and the legend
  const auto points = attr_values(svg, "polyline", "points");
  ASSERT_EQ(points.size(), 1u);
  EXPECT_EQ(count(points[0], ","), 3u);
  EXPECT_EQ(svg.find("nan"), std::string::npos);
  EXPECT_EQ(svg.find("inf"), std::string::npos);
}

// Log scale skips points with y <= 0 (documented in svg.h) and spaces decades evenly.
TEST(SvgLineChart, LogScaleSkipsNonPositiveAndSpacesDecadesEvenly) {
  const LineSeries s{"sweep", {1, 2, 3, 4, 5}, {1, 0, 10, -5, 100}};
  const std::string log_path = tmp_path("log.svg"), lin_path = tmp_path("lin.svg");
  write_line_chart_svg(log_path, "t", "x", "y", {s}, /*log_y=*/true);
  write_line_chart_svg(lin_path, "t", "x", "y", {s}, /*log_y=*/false);
  expect_well_formed(log_path);
  expect_well_formed(lin_path);
  const std::string log_svg = slurp(log_path), lin_svg = slurp(lin_path);
  EXPECT_EQ(count(lin_svg, "<circle"), 5u + 1u);
  ASSERT_EQ(count(log_svg, "<circle"), 3u + 1u);
  std::vector<double> cy;
  for (const auto& v : attr_values(log_svg, "circle", "cy")) cy.push_back(std::stod(v));
  // Data markers first (y = 1, 10, 100), then the legend marker.
  EXPECT_GT(cy[0], cy[1]);
  EXPECT_GT(cy[1], cy[2]);
  EXPECT_NEAR(cy[0] - cy[1], cy[1] - cy[2], 0.01);
  EXPECT_NE(log_svg.find(">10</text>"), std::string::npos);
  EXPECT_NE(log_svg.find(">100</text>"), std::string::npos);
}

TEST(SvgLineChart, LogScaleWithoutPositivePointThrows) {
  const std::string path = tmp_path("neg.svg");
  const std::string msg = error_of([&] { write_line_chart_svg(path, "t", "x", "y", {{"a", {1, 2}, {0, -1}}}, true); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("log"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(path));
}

TEST(SvgLineChart, BadInputThrowsNamingPathAndSeries) {
  const std::string path = tmp_path("bad_line.svg");
  std::string msg = error_of([&] { write_line_chart_svg(path, "t", "x", "y", {}); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("no series"), std::string::npos) << msg;
  msg = error_of([&] { write_line_chart_svg(path, "t", "x", "y", {{"ok", {1}, {1}}, {"hollow", {}, {}}}); });
  EXPECT_NE(msg.find("'hollow' is empty"), std::string::npos) << msg;
  msg = error_of([&] { write_line_chart_svg(path, "t", "x", "y", {{"val", {1, 2, 3}, {1, 2}}}); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("'val' has 3 x values and 2 y values"), std::string::npos) << msg;
  msg = error_of([&] { write_line_chart_svg(path, "t", "x", "y", {{"a", {kNaN}, {1}}}); });
  EXPECT_NE(msg.find("no finite point"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(path));
}

TEST(SvgLineChart, SinglePointAndConstantSeries) {
  const std::string path = tmp_path("single.svg");
  write_line_chart_svg(path, "t", "x", "y", {{"one", {5}, {2}}, {"flat", {0, 10}, {2, 2}}});
  expect_well_formed(path);
  const std::string svg = slurp(path);
  EXPECT_EQ(count(svg, "<polyline"), 1u);        // a single point has no line...
  EXPECT_EQ(count(svg, "<circle"), 1u + 2u + 2u);  // ...but a marker; plus two legend markers
}

// ---- Heat maps. ----

std::string fill_of_cell(const std::string& svg, const std::string& tooltip) {
  const size_t t = svg.find("<title>" + tooltip + "</title>");
  if (t == std::string::npos) return "no cell '" + tooltip + "'";
  const size_t r = svg.rfind("<rect ", t);
  const size_t f = svg.find("fill='", r) + 6;
  return svg.substr(f, svg.find('\'', f) - f);
}

TEST(SvgHeatmap, CellsTooltipsColoursAndLabels) {
  const std::string path = tmp_path("heat.svg");
  std::vector<std::vector<double>> v(4, std::vector<double>(6));
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 6; ++c) v[r][c] = 1.0 + r * 6 + c;
  v[0][0] = -2.5;          // min
  v[3][5] = 30 + 1.0 / 3;  // max, needs 17 digits to read back exactly
  v[1][1] = v[1][2];
  write_heatmap_svg(path, "Expert load", "expert", "layer", v, {"L0", "L<1>", "L2", "L3"},
                    {"e0", "e1", "e2", "e3", "e4", "e5"}, "tokens & share");
  expect_well_formed(path);
  const std::string svg = slurp(path);
  EXPECT_EQ(count(svg, "<rect"), 1u + 24u + 1u);  // background, cells, colour bar
  EXPECT_EQ(count(svg, "<title>"), 24u);
  EXPECT_NE(svg.find(">L&lt;1&gt;</text>"), std::string::npos);
  EXPECT_NE(svg.find(">e5</text>"), std::string::npos);
  EXPECT_NE(svg.find(">tokens &amp; share</text>"), std::string::npos);
  // Exact values in tooltips.
  const std::string min_tip = "layer L0, expert e0: tokens &amp; share = -2.5";
  const std::string max_head = "<title>layer L3, expert e5: tokens &amp; share = ";
  const size_t at = svg.find(max_head);
  ASSERT_NE(at, std::string::npos);
  const size_t from = at + max_head.size();
  const std::string max_text = svg.substr(from, svg.find("</title>", from) - from);
  EXPECT_EQ(std::stod(max_text), v[3][5]) << max_text;  // reads back bit for bit
  const std::string fmin = fill_of_cell(svg, min_tip);
  const std::string fmax = fill_of_cell(svg, "layer L3, expert e5: tokens &amp; share = " + max_text);
  EXPECT_EQ(fmin, "#440154");  // the scale's ends
  EXPECT_EQ(fmax, "#fde725");
  EXPECT_NE(fmin, fmax);
  EXPECT_EQ(fill_of_cell(svg, "layer L&lt;1&gt;, expert e1: tokens &amp; share = 9"),
            fill_of_cell(svg, "layer L&lt;1&gt;, expert e2: tokens &amp; share = 9"));
  EXPECT_NE(fill_of_cell(svg, "layer L2, expert e0: tokens &amp; share = 13"),
            fill_of_cell(svg, "layer L2, expert e1: tokens &amp; share = 14"));
  // Colour bar labels: min and max.
  EXPECT_NE(svg.find(">-2.5</text>"), std::string::npos);
  EXPECT_NE(svg.find(">30.33</text>"), std::string::npos);
  EXPECT_NE(svg.find("url(#colorbar)"), std::string::npos);
  EXPECT_NE(svg.find("id='colorbar'"), std::string::npos);
}

TEST(SvgHeatmap, ManyColumnsLabelEveryKth) {
  const std::string path = tmp_path("big_heat.svg");
  const int rows = 100, cols = 256;
  std::vector<std::vector<double>> v(rows, std::vector<double>(cols));
  std::vector<std::string> rl, cl;
  for (int r = 0; r < rows; ++r) rl.push_back(std::string("layer").append(std::to_string(r)));
  for (int c = 0; c < cols; ++c) cl.push_back(std::string("x").append(std::to_string(c)));
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) v[r][c] = std::sin(r * 0.1) * std::cos(c * 0.05);
  write_heatmap_svg(path, "big", "expert", "layer", v, rl, cl, "load");
  expect_well_formed(path);
  const std::string svg = slurp(path);
  EXPECT_EQ(count(svg, "<rect"), size_t(1 + rows * cols + 1));
  const std::regex col_text(">x([0-9]+)</text>"), row_text(">layer([0-9]+)</text>");
  std::vector<int> shown_cols, shown_rows;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), col_text); it != std::sregex_iterator(); ++it)
    shown_cols.push_back(std::stoi((*it)[1]));
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), row_text); it != std::sregex_iterator(); ++it)
    shown_rows.push_back(std::stoi((*it)[1]));
  ASSERT_GE(shown_cols.size(), 4u);
  EXPECT_LE(shown_cols.size(), size_t(cols / 4));
  ASSERT_GE(shown_rows.size(), 4u);
  EXPECT_LT(shown_rows.size(), size_t(rows));
  EXPECT_EQ(shown_cols[0], 0);
  const int k = shown_cols[1] - shown_cols[0];
  for (size_t i = 1; i < shown_cols.size(); ++i) EXPECT_EQ(shown_cols[i] - shown_cols[i - 1], k);
}

TEST(SvgHeatmap, DefaultLabelsAndNonFiniteCells) {
  const std::string path = tmp_path("nan_heat.svg");
  write_heatmap_svg(path, "t", "", "", {{1, kNaN}, {3, 4}}, {}, {}, "");
  expect_well_formed(path);
  const std::string svg = slurp(path);
  EXPECT_EQ(count(svg, "<rect"), 1u + 4u + 1u);
  EXPECT_EQ(fill_of_cell(svg, "0, 1: nan"), "#bbbbbb");
  EXPECT_EQ(fill_of_cell(svg, "0, 0: 1"), "#440154");  // NaN does not stretch the scale
  EXPECT_EQ(fill_of_cell(svg, "1, 1: 4"), "#fde725");
  EXPECT_NE(svg.find(">1</text>"), std::string::npos);  // default row/column labels are indices
}

TEST(SvgHeatmap, BadInputThrowsNamingPathAndField) {
  const std::string path = tmp_path("bad_heat.svg");
  auto heat = [&](const std::vector<std::vector<double>>& v, const std::vector<std::string>& rl,
                  const std::vector<std::string>& cl) {
    return error_of([&] { write_heatmap_svg(path, "t", "x", "y", v, rl, cl, "v"); });
  };
  std::string msg = heat({}, {}, {});
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("no values"), std::string::npos) << msg;
  EXPECT_NE(heat({{}}, {}, {}).find("no values"), std::string::npos);
  msg = heat({{1, 2}, {3, 4}, {5}}, {}, {});
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("row 2 has 1 values, row 0 has 2"), std::string::npos) << msg;
  msg = heat({{1, 2}, {3, 4}}, {"a"}, {});
  EXPECT_NE(msg.find("1 row labels for 2 rows"), std::string::npos) << msg;
  msg = heat({{1, 2}, {3, 4}}, {}, {"a", "b", "c"});
  EXPECT_NE(msg.find("3 column labels for 2 columns"), std::string::npos) << msg;
  msg = heat({{kNaN, kInf}}, {}, {});
  EXPECT_NE(msg.find("no finite value"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(path));
}

// ---- Histograms share the frame, legend and escaping. ----

TEST(SvgHistogram, WellFormedEscapedWithBarsAndLegend) {
  const std::string path = tmp_path("hist.svg");
  write_histogram_svg(path, "IS <grouped>", "a & b", {{"top<k>", {0.1, 0.1, 0.5}}, {"grouped", {0.9}}}, 0.0, 1.0, 10);
  expect_well_formed(path);
  const std::string svg = slurp(path);
  EXPECT_NE(svg.find(">top&lt;k&gt;</text>"), std::string::npos);
  EXPECT_NE(svg.find(">IS &lt;grouped&gt;</text>"), std::string::npos);
  EXPECT_NE(svg.find(">a &amp; b</text>"), std::string::npos);
  // Background, 3 non-empty bars (two for top<k>, one for grouped), legend box and 2 swatches.
  EXPECT_EQ(count(svg, "<rect"), 1u + 3u + 1u + 2u);
  EXPECT_NE(error_of([&] { write_histogram_svg(path, "t", "x", {}, 1.0, 1.0, 10); }).find(path), std::string::npos);
}

}  // namespace
}  // namespace moge::report
