//! Delivery of each new token to its readers: who reads the token Secret (the consumer index,
//! [`crate::consumers`]), who is restarted after a rotation (`restartConsumers`, and the
//! explicit `rolloutRestart` list), and what the status says of it: `status.consumers`, the
//! counts, and the condition `Delivered`.
//!
//! `Delivered` is True when every consumer sees rotations (it reads the Secret through a
//! volume or a projected volume only) or is restarted after them, and False with reason
//! [`CONSUMER_MISSES_ROTATION`] naming those that keep a stale token otherwise; a Warning Event
//! says so once per change of that set. Without the workload watch (`--consumers=false`) there
//! is neither, and `rolloutRestart` works as it always has.

use super::Context;
use super::owned_secret::Owner;
use super::restart::{self, Restarts};
use super::token_secret::Stored;
use crate::consumers::{Consumer, Workload};
use crate::crd::{TokenConsumer, TokenStatus, WorkloadRef};
use jiff::Timestamp;

/// The condition type.
pub const DELIVERED: &str = "Delivered";
/// Delivered=False: a consumer keeps a stale token after a rotation.
pub const CONSUMER_MISSES_ROTATION: &str = "ConsumerMissesRotation";
/// Delivered=True: every consumer sees rotations or is restarted after them.
pub const ROTATIONS_DELIVERED: &str = "RotationsDelivered";
/// Delivered=True: no workload reads the Secret.
pub const NO_CONSUMERS: &str = "NoConsumers";
/// Most consumers listed in `status.consumers`.
pub const LISTED: usize = 20;
/// Most consumers named in the condition's message.
const NAMED: usize = 5;

/// Who reads one token Secret, and who is restarted after its rotations.
#[derive(Debug, Clone)]
pub struct Plan {
    secret: String,
    /// `None`: consumers are not watched (`--consumers=false`).
    consumers: Option<Vec<Consumer>>,
    /// `restartConsumers`, and where the spec says it (for the messages).
    restart_consumers: bool,
    field: &'static str,
    /// `rolloutRestart`.
    listed: Vec<Workload>,
}

impl Plan {
    /// The plan for the token in Secret `namespace/secret`. `field` names the spec's
    /// `restartConsumers` setting (`spec.restartConsumers`, `spec.sessionToken.restartConsumers`).
    pub fn new(
        ctx: &Context,
        namespace: &str,
        secret: &str,
        (restart_consumers, field): (bool, &'static str),
        listed: &[WorkloadRef],
    ) -> Self {
        Plan {
            secret: secret.to_owned(),
            consumers: ctx
                .consumers
                .as_ref()
                .map(|index| index.readers(namespace, secret)),
            restart_consumers,
            field,
            listed: listed.iter().map(Workload::from).collect(),
        }
    }

    /// Whether `consumer` is to be restarted after each rotation (also a kind that cannot be:
    /// the restart worker says so).
    fn asks_restart(&self, consumer: &Consumer) -> bool {
        self.listed.contains(&consumer.workload)
            || (self.restart_consumers && !consumer.sees_rotation())
    }

    fn restarted(&self, consumer: &Consumer) -> bool {
        self.asks_restart(consumer) && consumer.workload.kind.restartable().is_some()
    }

    /// Whether `consumer` keeps a stale token after a rotation.
    fn stale(&self, consumer: &Consumer) -> bool {
        !consumer.sees_rotation() && !self.restarted(consumer)
    }

    /// What the token Secret records of restarts ([`restart`]): tracked when consumers are
    /// known or listed; a rotation needs a restart when a workload is listed or a consumer
    /// cannot see it (whether or not it is restarted: the record says what its pods hold).
    pub fn restarts(&self) -> Restarts {
        let consumers = self.consumers.as_deref();
        Restarts {
            tracked: consumers.is_some() || !self.listed.is_empty(),
            after_rotation: !self.listed.is_empty()
                || consumers.into_iter().flatten().any(|c| !c.sees_rotation()),
        }
    }

    /// The workloads to restart after a rotation: the listed ones and, with restartConsumers,
    /// every consumer that does not see rotations.
    pub fn to_restart(&self) -> Vec<Workload> {
        let mut workloads = self.listed.clone();
        if self.restart_consumers {
            workloads.extend(
                self.consumers
                    .iter()
                    .flatten()
                    .filter(|c| !c.sees_rotation())
                    .map(|c| c.workload.clone()),
            );
        }
        workloads.sort();
        workloads.dedup();
        workloads
    }

    /// After [`super::token_secret::ensure_token`]: asks for the restarts a rotation (or a
    /// restart not yet recorded on the Secret) calls for.
    pub fn restart_if_pending(&self, ctx: &Context, owner: &Owner, stored: &Stored) {
        let Some(info) = stored.info().filter(|_| stored.restart_pending()) else {
            return;
        };
        let workloads = self.to_restart();
        if workloads.is_empty() {
            return;
        }
        ctx.restarts.request(restart::Request {
            namespace: owner.namespace.clone(),
            secret: self.secret.clone(),
            token_id: info.jti.clone(),
            workloads,
            regarding: owner.object_ref.clone(),
        });
    }

    /// What the status says of the consumers (`None`: they are not watched).
    pub fn delivery(&self) -> Option<Delivery> {
        let consumers = self.consumers.as_ref()?;
        let mut listed: Vec<&Consumer> = consumers.iter().collect();
        // Those keeping a stale token first, then by kind and name (as the index sorts them).
        listed.sort_by_key(|c| !self.stale(c));
        let stale: Vec<&Consumer> = listed.iter().copied().filter(|c| self.stale(c)).collect();
        let (status, reason, message) = if consumers.is_empty() {
            (
                "True",
                NO_CONSUMERS,
                format!("no workload of the namespace reads Secret {}", self.secret),
            )
        } else if stale.is_empty() {
            let restarted = consumers.iter().filter(|c| self.restarted(c)).count();
            (
                "True",
                ROTATIONS_DELIVERED,
                format!(
                    "{} of Secret {}: {} see each rotation (volume), {restarted} restarted after each rotation",
                    count(consumers.len(), "consumer"),
                    self.secret,
                    consumers.len() - restarted,
                ),
            )
        } else {
            ("False", CONSUMER_MISSES_ROTATION, self.missed(&stale))
        };
        Some(Delivery {
            consumers: listed
                .iter()
                .take(LISTED)
                .map(|c| self.status_of(c))
                .collect(),
            count: consumers.len() as i64,
            missing: stale.len() as i64,
            condition: (status, reason, message),
        })
    }

    /// The message naming the consumers that keep a stale token, and what to do.
    fn missed(&self, stale: &[&Consumer]) -> String {
        let mut named: Vec<String> = stale
            .iter()
            .take(NAMED)
            .map(|c| {
                let modes: Vec<&str> = c.modes.iter().map(|m| m.as_str()).collect();
                format!("{} ({})", c.workload, modes.join(", "))
            })
            .collect();
        if stale.len() > NAMED {
            named.push(format!("{} more", stale.len() - NAMED));
        }
        let mut message = format!(
            "{} {} the old token after a rotation: {} Secret {} from the environment or a subPath mount, which a running pod never sees change, and {} not restarted.",
            named.join(", "),
            if stale.len() == 1 { "keeps" } else { "keep" },
            if stale.len() == 1 {
                "it reads"
            } else {
                "they read"
            },
            self.secret,
            if stale.len() == 1 { "is" } else { "are" },
        );
        if stale
            .iter()
            .any(|c| c.workload.kind.restartable().is_some())
        {
            message.push_str(&format!(
                " Set {}: true to restart Deployments, StatefulSets and DaemonSets once after each rotation, or mount the Secret as a volume.",
                self.field
            ));
        }
        if let Some(c) = stale
            .iter()
            .find(|c| c.workload.kind.restartable().is_none())
        {
            message.push_str(&format!(
                " {} cannot be restarted ({}): mount the Secret as a volume.",
                c.workload,
                c.workload.kind.why_not_restartable()
            ));
        }
        message
    }

    fn status_of(&self, consumer: &Consumer) -> TokenConsumer {
        let modes: Vec<_> = consumer.modes.iter().collect();
        TokenConsumer {
            kind: consumer.workload.kind,
            name: consumer.workload.name.clone(),
            mode: modes[0],
            modes: if modes.len() > 1 { modes } else { Vec::new() },
            sees_rotation: consumer.sees_rotation(),
            restarted: self.restarted(consumer),
        }
    }
}

fn count(n: usize, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

/// What the status says of a token's consumers.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    consumers: Vec<TokenConsumer>,
    count: i64,
    missing: i64,
    /// The `Delivered` condition: status, reason, message.
    condition: (&'static str, &'static str, String),
}

impl Delivery {
    /// Writes the consumers into `status` (or, without, removes them), given the status in
    /// place (`current`) for the condition's transition time.
    pub fn set(
        delivery: Option<&Delivery>,
        status: &mut TokenStatus,
        current: Option<&TokenStatus>,
        generation: Option<i64>,
        now: Timestamp,
    ) {
        status.conditions.retain(|c| c.type_ != DELIVERED);
        let Some(delivery) = delivery else {
            status.consumers.clear();
            status.consumer_count = None;
            status.consumers_missing_rotation = None;
            return;
        };
        status.consumers = delivery.consumers.clone();
        status.consumer_count = Some(delivery.count);
        status.consumers_missing_rotation = Some(delivery.missing);
        let (state, reason, message) = &delivery.condition;
        let condition = super::status::condition(
            current,
            (DELIVERED, state, reason),
            message.clone(),
            generation,
            now,
        );
        // After Ready.
        let at = status.conditions.len().min(1);
        status.conditions.insert(at, condition);
    }

    /// The message of a Delivered=False condition in `wanted` that `current` does not have
    /// yet: news worth a Warning Event (once per change of the consumers keeping a stale
    /// token, not once per reconcile).
    pub fn news(current: Option<&TokenStatus>, wanted: &TokenStatus) -> Option<String> {
        let delivered = |s: &TokenStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == DELIVERED)
                .map(|c| (c.status.clone(), c.message.clone()))
        };
        let (status, message) = delivered(wanted)?;
        (status == "False" && current.and_then(delivered) != Some((status, message.clone())))
            .then_some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumers::{Kind, Mode, Modes};

    fn consumer(kind: Kind, name: &str, modes: &[Mode]) -> Consumer {
        Consumer {
            workload: Workload {
                kind,
                name: name.into(),
            },
            modes: modes.iter().copied().collect::<Modes>(),
        }
    }

    fn plan(consumers: Option<Vec<Consumer>>, restart_consumers: bool, listed: &[&str]) -> Plan {
        Plan {
            secret: "t".into(),
            consumers,
            restart_consumers,
            field: "spec.restartConsumers",
            listed: listed
                .iter()
                .map(|n| Workload {
                    kind: Kind::Deployment,
                    name: (*n).into(),
                })
                .collect(),
        }
    }

    fn readers() -> Vec<Consumer> {
        vec![
            consumer(Kind::Deployment, "env", &[Mode::Env]),
            consumer(Kind::Deployment, "vol", &[Mode::Volume]),
            consumer(Kind::StatefulSet, "sub", &[Mode::SubPath, Mode::Volume]),
            consumer(Kind::CronJob, "export", &[Mode::EnvFrom]),
        ]
    }

    #[test]
    fn restart_consumers_restarts_exactly_those_that_miss_rotations() {
        let with = plan(Some(readers()), true, &[]);
        let names: Vec<String> = with.to_restart().iter().map(|w| w.to_string()).collect();
        assert_eq!(
            names,
            ["Deployment env", "StatefulSet sub", "CronJob export"]
        );
        assert_eq!(
            with.restarts(),
            Restarts {
                tracked: true,
                after_rotation: true
            }
        );
        // Without it: none, but the Secret still records that a rotation leaves stale pods.
        let without = plan(Some(readers()), false, &[]);
        assert!(without.to_restart().is_empty());
        assert!(without.restarts().after_rotation);
        // Only volume readers: a rotation needs no restart.
        let volumes = plan(
            Some(vec![consumer(Kind::Deployment, "vol", &[Mode::Volume])]),
            true,
            &[],
        );
        assert!(volumes.to_restart().is_empty() && !volumes.restarts().after_rotation);
        // Not watched: only the explicit list, as before.
        assert_eq!(plan(None, true, &[]).restarts(), Restarts::default());
        let listed = plan(None, false, &["vol"]);
        assert_eq!(listed.to_restart().len(), 1);
        assert!(listed.restarts().tracked && listed.restarts().after_rotation);
        assert!(listed.delivery().is_none());
    }

    #[test]
    fn delivered_names_who_keeps_a_stale_token() {
        let delivery = plan(Some(readers()), false, &["env"]).delivery().unwrap();
        assert_eq!((delivery.count, delivery.missing), (4, 2));
        let (status, reason, message) = &delivery.condition;
        assert_eq!((*status, *reason), ("False", CONSUMER_MISSES_ROTATION));
        assert!(
            message.starts_with(
                "StatefulSet sub (subPath, volume), CronJob export (envFrom) keep the old token"
            ),
            "{message}"
        );
        assert!(
            message.contains("Set spec.restartConsumers: true"),
            "{message}"
        );
        assert!(
            message.contains("CronJob export cannot be restarted"),
            "{message}"
        );
        // Listed: stale ones first; the listed Deployment is restarted.
        let listed: Vec<(&str, bool, bool)> = delivery
            .consumers
            .iter()
            .map(|c| (c.name.as_str(), c.sees_rotation, c.restarted))
            .collect();
        assert_eq!(
            listed,
            [
                ("sub", false, false),
                ("export", false, false),
                ("env", false, true),
                ("vol", true, false)
            ]
        );
        assert_eq!(delivery.consumers[0].mode, Mode::SubPath);
        assert_eq!(delivery.consumers[0].modes, [Mode::SubPath, Mode::Volume]);
        assert!(delivery.consumers[1].modes.is_empty());

        // With restartConsumers only the CronJob is left: it cannot be restarted.
        let delivery = plan(Some(readers()), true, &[]).delivery().unwrap();
        assert_eq!(delivery.missing, 1);
        assert!(
            !delivery.condition.2.contains("Set spec.restartConsumers"),
            "{}",
            delivery.condition.2
        );
        // Without the CronJob: delivered.
        let mut rest = readers();
        rest.pop();
        let delivery = plan(Some(rest), true, &[]).delivery().unwrap();
        assert_eq!(
            (delivery.condition.0, delivery.condition.1, delivery.missing),
            ("True", ROTATIONS_DELIVERED, 0)
        );
        assert_eq!(
            delivery.condition.2,
            "3 consumers of Secret t: 1 see each rotation (volume), 2 restarted after each rotation"
        );
        let none = plan(Some(Vec::new()), false, &[]).delivery().unwrap();
        assert_eq!((none.condition.1, none.count), (NO_CONSUMERS, 0));
    }

    #[test]
    fn at_most_twenty_are_listed_and_five_named() {
        let many: Vec<Consumer> = (0..30)
            .map(|i| consumer(Kind::Deployment, &format!("d{i:02}"), &[Mode::Env]))
            .collect();
        let delivery = plan(Some(many), false, &[]).delivery().unwrap();
        assert_eq!((delivery.consumers.len(), delivery.count), (LISTED, 30));
        assert!(
            delivery
                .condition
                .2
                .starts_with("Deployment d00 (env), Deployment d01 (env), Deployment d02 (env), Deployment d03 (env), Deployment d04 (env), 25 more keep"),
            "{}",
            delivery.condition.2
        );
    }

    #[test]
    fn the_status_carries_it_and_news_is_a_change_of_who_misses() {
        let now = Timestamp::from_second(1_000).unwrap();
        let delivery = plan(Some(readers()), false, &[]).delivery().unwrap();
        let mut status = TokenStatus::default();
        Delivery::set(Some(&delivery), &mut status, None, Some(1), now);
        assert_eq!(status.consumer_count, Some(4));
        assert_eq!(status.conditions[0].type_, DELIVERED);
        let news = Delivery::news(None, &status).expect("news");
        assert!(news.contains("Deployment env (env)"), "{news}");
        // The same again: no news, and the transition time stays.
        let mut again = TokenStatus::default();
        let later = Timestamp::from_second(2_000).unwrap();
        Delivery::set(Some(&delivery), &mut again, Some(&status), Some(1), later);
        assert_eq!(again, status);
        assert!(Delivery::news(Some(&status), &again).is_none());
        // Not watched any more: all of it goes.
        Delivery::set(None, &mut again, Some(&status), Some(1), later);
        assert_eq!(again, TokenStatus::default());
    }
}
