#include "moge/moe/placement.h"

#include <algorithm>

#include "moge/core/error.h"

namespace moge::moe {

namespace {

std::string describe(int n, int m, RoutingMode mode) {
  return std::to_string(n) + " experts in " + std::to_string(m) + " groups (" + routing_mode_name(mode) +
         " routing)";
}

}  // namespace

Placement::Placement(int num_experts, int num_groups, RoutingMode mode, int devices)
    : num_experts_(num_experts), num_groups_(num_groups), devices_(devices), mode_(mode) {
  const int n = num_experts, m = num_groups, d = devices;
  const std::string what = "placement: " + describe(n, m, mode) + " on " + std::to_string(d) + " devices: ";
  check(n > 0 && m > 0 && d > 0, what + "the experts, groups and devices must be positive");
  check(n % m == 0, what + "the groups (" + std::to_string(m) + ") do not divide the experts (" + std::to_string(n) + ")");
  if (mode == RoutingMode::grouped) {
    check(m % d == 0 || d % m == 0, what + "the devices must divide the groups or the groups the devices");
    if (d > m)
      check((n / m) % (d / m) == 0, what + "a group's " + std::to_string(n / m) + " experts do not split evenly over " +
                                        std::to_string(d / m) + " devices");
  } else {
    check(n % d == 0, what + "the devices (" + std::to_string(d) + ") do not divide the experts (" +
                          std::to_string(n) + ")");
  }
}

Placement::Placement(const RouterConfig& router, int devices)
    : Placement(router.num_experts, router.num_groups, router.mode, devices) {}

void Placement::check_device(int device) const {
  check(device >= 0 && device < devices_,
        "placement: device " + std::to_string(device) + " is not one of the " + std::to_string(devices_) + " devices");
}

ExpertRange Placement::experts(int device) const {
  check_device(device);
  const int per = experts_per_device();
  return {device * per, (device + 1) * per};
}

ExpertRange Placement::groups(int device) const {
  const ExpertRange e = experts(device);
  const int per_group = num_experts_ / num_groups_;
  return {e.begin / per_group, (e.end - 1) / per_group + 1};
}

int Placement::owner(int expert) const {
  check(expert >= 0 && expert < num_experts_, "placement: expert " + std::to_string(expert) + " is not one of the " +
                                                  std::to_string(num_experts_) + " experts");
  return expert / experts_per_device();
}

std::vector<int> Placement::missing(int device, std::span<const int> loaded) const {
  const ExpertRange own = experts(device);
  std::vector<bool> have(size_t(own.size()), false);
  for (int e : loaded)
    if (own.contains(e)) have[size_t(e - own.begin)] = true;
  std::vector<int> out;
  for (int e = own.begin; e < own.end; ++e)
    if (!have[size_t(e - own.begin)]) out.push_back(e);
  return out;
}

void Placement::check_covers(int device, std::span<const int> loaded, const std::string& what) const {
  const std::vector<int> lacking = missing(device, loaded);
  if (lacking.empty()) return;
  const ExpertRange own = experts(device);
  std::string list;
  const size_t shown = std::min<size_t>(lacking.size(), 8);
  for (size_t i = 0; i < shown; ++i) list += (i ? ", " : "") + std::to_string(lacking[i]);
  if (shown < lacking.size()) list += ", ... (" + std::to_string(lacking.size()) + " in all)";
  throw Error(what + ": device " + std::to_string(device) + " of " + std::to_string(devices_) + " (experts " +
              std::to_string(own.begin) + "-" + std::to_string(own.end - 1) + ") lacks expert" +
              (lacking.size() > 1 ? "s " : " ") + list);
}

}  // namespace moge::moe
