//! Consumers: the workloads whose pod template reads a token Secret, and how.
//!
//! A rotated token helps only if its readers see it. The kubelet refreshes a Secret mounted as
//! a volume (or through a projected volume) in place, but never an environment variable
//! (`env`, `envFrom`) or a `subPath` mount: such a pod keeps the token it started with. The
//! operator watches the workloads of the namespaces it watches (Deployments, StatefulSets,
//! DaemonSets, CronJobs, and ReplicaSets and Jobs without a controlling owner: an owned one is
//! its owner's business) and keeps, per workload, only which Secrets its pod template reads and
//! how ([`template`]); an index answers "who reads this Secret" without a scan ([`index`]), and
//! its changes trigger the reconcile of the token's owner ([`watch`]).
//!
//! Run-to-completion kinds: the pods of a CronJob or a Job read the Secret when they start, so
//! each run starts with the current token while a run in progress keeps the one it started
//! with; reading it from the environment therefore misses rotations as for any other kind. A
//! CronJob, a Job or a bare ReplicaSet has no rollout and cannot be restarted: tokenmint says so
//! (an Event) instead of pretending.

pub mod index;
pub mod template;
pub mod watch;

pub use crate::crd::{ConsumerKind as Kind, ReadMode as Mode};
use crate::crd::{WorkloadKind, WorkloadRef};

impl Kind {
    /// Every kind, in the order of [`Kind::slot`].
    pub const ALL: [Kind; 6] = [
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::ReplicaSet,
        Kind::Job,
        Kind::CronJob,
    ];

    /// Its position in [`Kind::ALL`].
    pub fn slot(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
        }
    }

    /// The API group (`apps` or `batch`), version `v1`.
    pub fn group(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet | Kind::ReplicaSet => "apps",
            Kind::Job | Kind::CronJob => "batch",
        }
    }

    /// The resource (plural) name.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
            Kind::DaemonSet => "daemonsets",
            Kind::ReplicaSet => "replicasets",
            Kind::Job => "jobs",
            Kind::CronJob => "cronjobs",
        }
    }

    /// Whether tokenmint can restart it (a rollout of a new pod template): the kinds of
    /// `rolloutRestart`.
    pub fn restartable(self) -> Option<WorkloadKind> {
        match self {
            Kind::Deployment => Some(WorkloadKind::Deployment),
            Kind::StatefulSet => Some(WorkloadKind::StatefulSet),
            Kind::DaemonSet => Some(WorkloadKind::DaemonSet),
            Kind::ReplicaSet | Kind::Job | Kind::CronJob => None,
        }
    }

    /// Why it cannot be restarted, for the Event that says so.
    pub fn why_not_restartable(self) -> &'static str {
        match self {
            Kind::CronJob => {
                "a CronJob has no rollout: its next run starts with the new token, a run in progress keeps the old one"
            }
            Kind::Job => {
                "a Job has no rollout: its pods keep the token they started with until they end"
            }
            _ => {
                "a ReplicaSet without a Deployment has no rollout: delete its pods to give them the new token"
            }
        }
    }
}

impl From<WorkloadKind> for Kind {
    fn from(kind: WorkloadKind) -> Self {
        match kind {
            WorkloadKind::Deployment => Kind::Deployment,
            WorkloadKind::StatefulSet => Kind::StatefulSet,
            WorkloadKind::DaemonSet => Kind::DaemonSet,
        }
    }
}

impl Mode {
    /// In order: the modes that miss rotations first.
    pub const ALL: [Mode; 5] = [
        Mode::Env,
        Mode::EnvFrom,
        Mode::SubPath,
        Mode::Volume,
        Mode::Projected,
    ];

    /// Whether the kubelet puts a rotated token in front of a running container.
    pub fn sees_rotation(self) -> bool {
        matches!(self, Mode::Volume | Mode::Projected)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Env => "env",
            Mode::EnvFrom => "envFrom",
            Mode::SubPath => "subPath",
            Mode::Volume => "volume",
            Mode::Projected => "projected",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The ways one workload reads one Secret: a set of [`Mode`]s in one byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Modes(u8);

impl Modes {
    pub fn of(mode: Mode) -> Self {
        Modes(mode.bit())
    }

    pub fn insert(&mut self, mode: Mode) {
        self.0 |= mode.bit();
    }

    pub fn contains(self, mode: Mode) -> bool {
        self.0 & mode.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The modes, those that miss rotations first.
    pub fn iter(self) -> impl Iterator<Item = Mode> {
        Mode::ALL.into_iter().filter(move |m| self.contains(*m))
    }

    /// Whether a running pod sees a rotated token: only when every way it reads it does.
    pub fn sees_rotation(self) -> bool {
        !self.is_empty() && self.iter().all(Mode::sees_rotation)
    }

    /// The mode to name first: the first that misses rotations, else the first.
    pub fn primary(self) -> Option<Mode> {
        self.iter().next()
    }
}

impl FromIterator<Mode> for Modes {
    fn from_iter<I: IntoIterator<Item = Mode>>(iter: I) -> Self {
        let mut modes = Modes::default();
        iter.into_iter().for_each(|m| modes.insert(m));
        modes
    }
}

/// A workload of a namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    pub kind: Kind,
    pub name: String,
}

impl From<WorkloadRef> for Workload {
    fn from(w: WorkloadRef) -> Self {
        Workload {
            kind: w.kind.into(),
            name: w.name,
        }
    }
}

impl From<&WorkloadRef> for Workload {
    fn from(w: &WorkloadRef) -> Self {
        w.clone().into()
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.name)
    }
}

/// A workload that reads a Secret, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumer {
    pub workload: Workload,
    pub modes: Modes,
}

impl Consumer {
    pub fn sees_rotation(&self) -> bool {
        self.modes.sees_rotation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_sees_rotations_only_when_every_way_it_reads_does() {
        assert!(Modes::of(Mode::Volume).sees_rotation());
        assert!(Modes::of(Mode::Projected).sees_rotation());
        for missing in [Mode::Env, Mode::EnvFrom, Mode::SubPath] {
            assert!(!Modes::of(missing).sees_rotation());
            let both: Modes = [Mode::Volume, missing].into_iter().collect();
            assert!(!both.sees_rotation(), "{missing:?} and a volume");
            assert_eq!(both.primary(), Some(missing));
        }
        assert!(!Modes::default().sees_rotation());
        let all: Modes = Mode::ALL.into_iter().collect();
        assert_eq!(all.iter().collect::<Vec<_>>(), Mode::ALL);
    }

    #[test]
    fn kinds_know_their_place_and_whether_they_restart() {
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(kind.slot(), i);
        }
        assert_eq!(
            Kind::ALL.map(|k| k.restartable().is_some()),
            [true, true, true, false, false, false]
        );
        assert_eq!(Kind::CronJob.group(), "batch");
        assert_eq!(Kind::ReplicaSet.plural(), "replicasets");
    }
}
