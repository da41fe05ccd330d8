// Placement of experts on devices: the three rules of issue 5 and their errors.
#include <gtest/gtest.h>

#include <numeric>
#include <string>
#include <vector>

#include "moge/core/error.h"
#include "moge/moe/placement.h"

namespace moge::moe {
namespace {

std::string placement_error(int n, int m, RoutingMode mode, int d) {
  try {
    Placement(n, m, mode, d);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Every expert is on exactly one device, owner() agrees with experts(), ranges are contiguous.
void expect_partition(const Placement& p) {
  std::vector<int> owner(size_t(p.num_experts()), -1);
  int next = 0;
  for (int d = 0; d < p.devices(); ++d) {
    const ExpertRange e = p.experts(d);
    EXPECT_EQ(e.begin, next);
    EXPECT_EQ(e.size(), p.experts_per_device());
    for (int x = e.begin; x < e.end; ++x) {
      EXPECT_EQ(owner[size_t(x)], -1);
      owner[size_t(x)] = d;
      EXPECT_EQ(p.owner(x), d);
    }
    next = e.end;
  }
  EXPECT_EQ(next, p.num_experts());
}

TEST(Placement, GroupedWholeGroupsWhenDevicesDivideGroups) {
  const Placement p(64, 8, RoutingMode::grouped, 4);  // 2 groups of 8 experts a device
  expect_partition(p);
  EXPECT_EQ(p.experts_per_device(), 16);
  for (int d = 0; d < 4; ++d) {
    EXPECT_EQ(p.experts(d).begin, 16 * d);
    EXPECT_EQ(p.groups(d).begin, 2 * d);
    EXPECT_EQ(p.groups(d).end, 2 * d + 2);
  }
  EXPECT_EQ(p.owner(15), 0);
  EXPECT_EQ(p.owner(16), 1);
  EXPECT_EQ(p.owner(63), 3);
  const Placement one(64, 8, RoutingMode::grouped, 1);
  expect_partition(one);
  EXPECT_EQ(one.groups(0).size(), 8);
  const Placement same(64, 8, RoutingMode::grouped, 8);  // the paper's case: one group a device
  expect_partition(same);
  EXPECT_EQ(same.groups(5).begin, 5);
  EXPECT_EQ(same.groups(5).size(), 1);
}

TEST(Placement, GroupedSplitsGroupsWhenGroupsDivideDevices) {
  const Placement p(32, 4, RoutingMode::grouped, 8);  // each group of 8 experts over 2 devices
  expect_partition(p);
  EXPECT_EQ(p.experts_per_device(), 4);
  for (int d = 0; d < 8; ++d) {
    EXPECT_EQ(p.groups(d).begin, d / 2);
    EXPECT_EQ(p.groups(d).size(), 1);
  }
  EXPECT_EQ(p.experts(3).begin, 12);
  EXPECT_EQ(p.experts(3).end, 16);
  EXPECT_EQ(p.owner(12), 3);
  expect_partition(Placement(16, 2, RoutingMode::grouped, 16));  // one expert a device
}

TEST(Placement, TopkAndGroupLimitedAreContiguous) {
  for (RoutingMode mode : {RoutingMode::topk, RoutingMode::group_limited}) {
    const Placement p(64, 8, mode, 16);
    expect_partition(p);
    EXPECT_EQ(p.experts(5).begin, 20);
    EXPECT_EQ(p.experts(5).end, 24);
    EXPECT_EQ(p.groups(5).begin, 2);
    EXPECT_EQ(p.groups(5).size(), 1);
    // Devices need not divide or be divided by the groups: 48 experts, 8 groups, 6 devices.
    const Placement q(48, 8, mode, 6);
    expect_partition(q);
    EXPECT_EQ(q.groups(1).begin, 1);  // experts 8..15: groups 1 and 2
    EXPECT_EQ(q.groups(1).end, 3);
  }
  const Placement flat(8, 1, RoutingMode::topk, 2);
  expect_partition(flat);
  moe::RouterConfig router;
  router.num_experts = 16;
  router.num_groups = 4;
  router.mode = RoutingMode::topk;
  const Placement from_config(router, 4);
  EXPECT_EQ(from_config.experts(3).begin, 12);
  EXPECT_EQ(from_config.mode(), RoutingMode::topk);
}

TEST(Placement, ImpossiblePlacementsNameTheNumbers) {
  EXPECT_EQ(placement_error(64, 8, RoutingMode::grouped, 3),
            "placement: 64 experts in 8 groups (grouped routing) on 3 devices: the devices must divide the groups or "
            "the groups the devices");
  EXPECT_EQ(placement_error(24, 8, RoutingMode::grouped, 16),
            "placement: 24 experts in 8 groups (grouped routing) on 16 devices: a group's 3 experts do not split "
            "evenly over 2 devices");
  EXPECT_EQ(placement_error(64, 8, RoutingMode::topk, 6),
            "placement: 64 experts in 8 groups (topk routing) on 6 devices: the devices (6) do not divide the "
            "experts (64)");
  EXPECT_EQ(placement_error(64, 8, RoutingMode::group_limited, 128),
            "placement: 64 experts in 8 groups (group_limited routing) on 128 devices: the devices (128) do not "
            "divide the experts (64)");
  EXPECT_NE(placement_error(64, 8, RoutingMode::grouped, 0).find("must be positive"), std::string::npos);
  EXPECT_NE(placement_error(0, 8, RoutingMode::topk, 2).find("must be positive"), std::string::npos);
  EXPECT_NE(placement_error(30, 8, RoutingMode::grouped, 2).find("do not divide the experts (30)"), std::string::npos);

  const Placement p(64, 8, RoutingMode::grouped, 4);
  EXPECT_THROW(p.experts(4), Error);
  EXPECT_THROW(p.experts(-1), Error);
  EXPECT_THROW(p.owner(64), Error);
  EXPECT_THROW(p.owner(-1), Error);
}

TEST(Placement, LoadedExpertsMustCoverTheDevice) {
  const Placement p(16, 4, RoutingMode::grouped, 4);  // device 2: experts 8..11
  std::vector<int> all(16);
  std::iota(all.begin(), all.end(), 0);
  for (int d = 0; d < 4; ++d) EXPECT_NO_THROW(p.check_covers(d, all, "ckpt"));
  const std::vector<int> own = {11, 9, 8, 10, 9};  // any order, duplicates, nothing else
  EXPECT_TRUE(p.missing(2, own).empty());
  EXPECT_NO_THROW(p.check_covers(2, own, "ckpt"));

  const std::vector<int> lacking = {0, 1, 2, 3, 8, 11, 12};  // device 2 lacks 9 and 10
  EXPECT_EQ(p.missing(2, lacking), (std::vector<int>{9, 10}));
  EXPECT_NO_THROW(p.check_covers(0, lacking, "ckpt"));
  try {
    p.check_covers(2, lacking, "model.safetensors layer 3");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "model.safetensors layer 3: device 2 of 4 (experts 8-11) lacks experts 9, 10");
  }
  try {
    p.check_covers(3, std::vector<int>{12, 13, 14}, "ckpt");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "ckpt: device 3 of 4 (experts 12-15) lacks expert 15");
  }
  EXPECT_EQ(p.missing(1, std::vector<int>{}).size(), 4u);
}

}  // namespace
}  // namespace moge::moe
