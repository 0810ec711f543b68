//! A PodDisruptionBudget that lets voluntary disruptions (drains, upgrades) take down at most a
//! minority of the members, so a majority always remains.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{owned_meta, selector, Names};
use crate::crd::PaxosGroup;

/// The largest minority of `members`: (members - 1) / 2, at least 0.
pub fn tolerated_down(members: i32) -> i32 {
    ((members - 1) / 2).max(0)
}

pub fn disruption_budget(group: &PaxosGroup, names: &Names) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: owned_meta(group, names, names.disruption_budget()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(tolerated_down(group.spec.members))),
            selector: Some(LabelSelector {
                match_labels: Some(selector(names)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_majority_always_stays() {
        for (members, down) in [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (7, 3)] {
            assert_eq!(tolerated_down(members), down, "{members} members");
            assert!(members - down > members / 2);
        }
    }
}
