#pragma once
// Placement: which device holds which routed experts (MOGE.md §4, issue 5).
//
//   grouped (MoGE), D divides M: each device holds M/D whole groups.
//   grouped, M divides D:        each group's experts are split over D/M devices, contiguous
//                                ranges of (N/M)/(D/M) experts (N/M must divide by D/M).
//   topk, group_limited:         contiguous ranges of N/D experts (D must divide N).
//
// In every case device d holds the experts [d*N/D, (d+1)*N/D): the rules differ in which D they
// accept. Anything else is a moge::Error naming the numbers.
#include <span>
#include <string>
#include <vector>

#include "moge/moe/config.h"

namespace moge::moe {

struct ExpertRange {  // [begin, end)
  int begin = 0, end = 0;
  int size() const { return end - begin; }
  bool contains(int expert) const { return expert >= begin && expert < end; }
};

class Placement {
 public:
  // N experts in M groups (group g holds [g*N/M, (g+1)*N/M)) on D devices.
  Placement(int num_experts, int num_groups, RoutingMode mode, int devices);
  Placement(const RouterConfig& router, int devices);

  int num_experts() const { return num_experts_; }
  int num_groups() const { return num_groups_; }
  RoutingMode mode() const { return mode_; }
  int devices() const { return devices_; }
  int experts_per_device() const { return num_experts_ / devices_; }

  ExpertRange experts(int device) const;  // the global expert ids device `device` holds
  ExpertRange groups(int device) const;   // the groups with experts on it (whole or in part)
  int owner(int expert) const;            // the device that holds `expert`

  // The experts of device `device` that `loaded` lacks (ids of other devices are ignored).
  std::vector<int> missing(int device, std::span<const int> loaded) const;
  // Throws moge::Error, starting with `what` (e.g. the checkpoint and layer), naming the device
  // and the experts it lacks, unless `loaded` holds every expert of device `device`.
  void check_covers(int device, std::span<const int> loaded, const std::string& what) const;

 private:
  void check_device(int device) const;

  int num_experts_, num_groups_, devices_;
  RoutingMode mode_;
};

}  // namespace moge::moe
