//! Who reads each Secret: the consumer index, kept from the workload watches.
//!
//! Two maps, kept together: per workload the Secrets it reads (to know what an update or a
//! deletion changes), and one ordered map of (namespace, Secret, kind, workload) → how it reads
//! it, in which the readers of a Secret are one range (what a reconcile asks: a look-up, never
//! a scan, and no per-Secret allocation, however many or few read it). Names are shared
//! between them (`Arc<str>`: namespaces, Secret and workload names each allocated once), and a
//! workload that reads no Secret costs nothing. Every change reports the Secrets whose readers
//! changed — appeared, left, or read it another way — so that the owners of those tokens are
//! reconciled at once.

use super::template::SlimWorkload;
use super::{Consumer, Kind, Modes, Workload};
use kube::runtime::watcher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

type Name = Arc<str>;

/// The Secrets one workload reads, sorted by name, each with the ways it reads it.
type Reads = Box<[(Name, Modes)]>;

/// The workloads of one kind: namespace → name → what it reads.
type Workloads = HashMap<Name, HashMap<Name, Reads>>;

/// (namespace, Secret, kind, workload): one workload reading one Secret.
type Edge = (Name, Name, Kind, Name);

/// A Secret whose readers changed: (namespace, name).
pub type Changed = (Name, Name);

#[derive(Default)]
struct Inner {
    /// Per kind ([`Kind::slot`]).
    workloads: [Workloads; 6],
    /// Who reads what, and how; the readers of one Secret are adjacent.
    readers: BTreeMap<Edge, Modes>,
    /// Per kind: the workloads of a relist in progress, swapped in when it is done.
    relists: [Option<Workloads>; 6],
    /// Namespaces, interned.
    namespaces: HashSet<Name>,
}

/// The readers of every Secret of the watched namespaces.
#[derive(Default)]
pub struct ConsumerIndex(RwLock<Inner>);

impl ConsumerIndex {
    /// The workloads reading Secret `secret` of `namespace`, sorted by kind and name.
    pub fn readers(&self, namespace: &str, secret: &str) -> Vec<Consumer> {
        let inner = self.0.read().unwrap_or_else(|e| e.into_inner());
        inner
            .edges(&Name::from(namespace), secret)
            .map(|((_, _, kind, name), modes)| Consumer {
                workload: Workload {
                    kind: *kind,
                    name: name.to_string(),
                },
                modes: *modes,
            })
            .collect()
    }

    /// How many workloads that read a Secret are known.
    pub fn workloads(&self) -> usize {
        let inner = self.0.read().unwrap_or_else(|e| e.into_inner());
        inner
            .workloads
            .iter()
            .flat_map(|kind| kind.values())
            .map(HashMap::len)
            .sum()
    }

    /// Applies one event of the watch of `kind`. Returns the Secrets whose readers changed.
    pub fn apply(&self, kind: Kind, event: &watcher::Event<SlimWorkload>) -> Vec<Changed> {
        let mut inner = self.0.write().unwrap_or_else(|e| e.into_inner());
        let slot = kind.slot();
        let mut changed = Vec::new();
        match event {
            watcher::Event::Apply(workload) | watcher::Event::Delete(workload) => {
                let Some((namespace, name)) = identity(workload) else {
                    return changed;
                };
                let namespace = inner.namespace(namespace);
                let reads = match event {
                    watcher::Event::Apply(w) if w.is_consumer(kind) => {
                        inner.reads_of(&namespace, w)
                    }
                    _ => Reads::default(),
                };
                let name = inner.name(&inner.workloads[slot], &namespace, name);
                let old = inner.set(slot, &namespace, &name, reads.clone());
                inner.update(kind, &namespace, &name, &old, &reads, &mut changed);
            }
            watcher::Event::Init => inner.relists[slot] = Some(Workloads::default()),
            watcher::Event::InitApply(workload) => {
                if let Some((namespace, name)) = identity(workload)
                    && workload.is_consumer(kind)
                {
                    let namespace = inner.namespace(namespace);
                    let reads = inner.reads_of(&namespace, workload);
                    if !reads.is_empty() {
                        let name = inner.name(&inner.workloads[slot], &namespace, name);
                        inner.relists[slot]
                            .get_or_insert_default()
                            .entry(namespace)
                            .or_default()
                            .insert(name, reads);
                    }
                }
            }
            watcher::Event::InitDone => {
                let listed = inner.relists[slot].take().unwrap_or_default();
                let old = std::mem::replace(&mut inner.workloads[slot], listed);
                // Those the list no longer has, or has anew.
                for (namespace, workloads) in &old {
                    for (name, reads) in workloads {
                        let now = inner.workloads[slot]
                            .get(namespace)
                            .and_then(|w| w.get(name))
                            .cloned()
                            .unwrap_or_default();
                        inner.update(kind, namespace, name, reads, &now, &mut changed);
                    }
                }
                // Those it has that were not known.
                let new: Vec<(Name, Name, Reads)> = inner.workloads[slot]
                    .iter()
                    .flat_map(|(namespace, workloads)| {
                        workloads
                            .iter()
                            .filter(|(name, _)| {
                                old.get(namespace).is_none_or(|w| !w.contains_key(*name))
                            })
                            .map(|(name, reads)| (namespace.clone(), name.clone(), reads.clone()))
                    })
                    .collect();
                for (namespace, name, reads) in new {
                    inner.update(kind, &namespace, &name, &[], &reads, &mut changed);
                }
            }
        }
        changed.sort();
        changed.dedup();
        changed
    }
}

fn identity(workload: &SlimWorkload) -> Option<(&str, &str)> {
    use kube::Resource;
    let meta = workload.meta();
    Some((meta.namespace.as_deref()?, meta.name.as_deref()?))
}

impl Inner {
    fn namespace(&mut self, namespace: &str) -> Name {
        if let Some(interned) = self.namespaces.get(namespace) {
            return interned.clone();
        }
        let interned: Name = namespace.into();
        self.namespaces.insert(interned.clone());
        interned
    }

    /// The name of workload `namespace/name`, shared with `workloads` where it is known.
    fn name(&self, workloads: &Workloads, namespace: &str, name: &str) -> Name {
        workloads
            .get(namespace)
            .and_then(|w| w.get_key_value(name))
            .map_or_else(|| Name::from(name), |(known, _)| known.clone())
    }

    /// The readers of Secret `namespace/secret`: one range of the ordered map.
    fn edges<'a>(
        &'a self,
        namespace: &'a Name,
        secret: &'a str,
    ) -> impl Iterator<Item = (&'a Edge, &'a Modes)> + 'a {
        let from = (
            namespace.clone(),
            Name::from(secret),
            Kind::ALL[0],
            Name::from(""),
        );
        self.readers
            .range(from..)
            .take_while(move |((n, s, _, _), _)| n == namespace && **s == *secret)
    }

    /// What `workload` reads, its Secret names shared with the readers' map where known.
    fn reads_of(&self, namespace: &Name, workload: &SlimWorkload) -> Reads {
        workload
            .reads
            .iter()
            .map(|(secret, modes)| {
                let name = self.edges(namespace, secret).next().map_or_else(
                    || Name::from(secret.as_str()),
                    |((_, s, _, _), _)| s.clone(),
                );
                (name, *modes)
            })
            .collect()
    }

    /// Records what workload `namespace/name` of kind `slot` reads; returns what it read.
    fn set(&mut self, slot: usize, namespace: &Name, name: &Name, reads: Reads) -> Reads {
        let workloads = &mut self.workloads[slot];
        if reads.is_empty() {
            let Some(of_namespace) = workloads.get_mut(namespace) else {
                return Reads::default();
            };
            let old = of_namespace.remove(name).unwrap_or_default();
            if of_namespace.is_empty() {
                workloads.remove(namespace);
            }
            return old;
        }
        workloads
            .entry(namespace.clone())
            .or_default()
            .insert(name.clone(), reads)
            .unwrap_or_default()
    }

    /// Moves the readers' map from `old` to `new` reads of one workload (both sorted by
    /// Secret), noting every Secret whose readers changed.
    fn update(
        &mut self,
        kind: Kind,
        namespace: &Name,
        name: &Name,
        old: &[(Name, Modes)],
        new: &[(Name, Modes)],
        changed: &mut Vec<Changed>,
    ) {
        let edge = |secret: &Name| (namespace.clone(), secret.clone(), kind, name.clone());
        let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
        loop {
            let step = match (o.peek(), n.peek()) {
                (None, None) => return,
                (Some(a), Some(b)) => a.0.cmp(&b.0),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
            };
            let secret = match step {
                std::cmp::Ordering::Less => {
                    let (secret, _) = o.next().expect("peeked");
                    self.readers.remove(&edge(secret));
                    secret
                }
                std::cmp::Ordering::Greater => {
                    let (secret, modes) = n.next().expect("peeked");
                    self.readers.insert(edge(secret), *modes);
                    secret
                }
                std::cmp::Ordering::Equal => {
                    let ((secret, was), (_, is)) =
                        (o.next().expect("peeked"), n.next().expect("peeked"));
                    if was == is {
                        continue;
                    }
                    self.readers.insert(edge(secret), *is);
                    secret
                }
            };
            changed.push((namespace.clone(), secret.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumers::Mode;
    use serde_json::json;

    fn workload(name: &str, env: &[&str], volume: &[&str]) -> SlimWorkload {
        let env: Vec<_> = env
            .iter()
            .map(|s| json!({"name": "E", "valueFrom": {"secretKeyRef": {"name": s, "key": "token"}}}))
            .collect();
        let volumes: Vec<_> = volume
            .iter()
            .map(|s| json!({"name": s, "secret": {"secretName": s}}))
            .collect();
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "team-a"},
            "spec": {"template": {"spec": {"volumes": volumes,
                "containers": [{"name": "c", "env": env}]}}}}))
        .unwrap()
    }

    fn names(index: &ConsumerIndex, secret: &str) -> Vec<(String, Vec<Mode>)> {
        index
            .readers("team-a", secret)
            .into_iter()
            .map(|c| (c.workload.to_string(), c.modes.iter().collect()))
            .collect()
    }

    fn secrets(changed: Vec<Changed>) -> Vec<String> {
        let mut names: Vec<String> = changed.into_iter().map(|(_, s)| s.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn readers_follow_updates_deletions_and_relists() {
        let index = ConsumerIndex::default();
        let apply = |kind, event| secrets(index.apply(kind, &event));
        assert!(apply(Kind::Deployment, watcher::Event::Init).is_empty());
        apply(
            Kind::Deployment,
            watcher::Event::InitApply(workload("a", &["t"], &[])),
        );
        assert_eq!(
            apply(Kind::Deployment, watcher::Event::InitDone),
            ["t"],
            "a relist reports what it adds"
        );
        assert_eq!(
            names(&index, "t"),
            [("Deployment a".into(), vec![Mode::Env])]
        );
        // A CronJob reading `t` as a volume, and `u` too.
        assert_eq!(
            apply(
                Kind::CronJob,
                watcher::Event::Apply(workload("a", &[], &["t", "u"]))
            ),
            ["t", "u"]
        );
        // The Deployment now reads `t` both ways: a change of modes.
        assert_eq!(
            apply(
                Kind::Deployment,
                watcher::Event::Apply(workload("a", &["t"], &["t"]))
            ),
            ["t"]
        );
        // The same again: nothing changed.
        assert!(
            apply(
                Kind::Deployment,
                watcher::Event::Apply(workload("a", &["t"], &["t"]))
            )
            .is_empty()
        );
        assert_eq!(
            names(&index, "t"),
            [
                ("Deployment a".into(), vec![Mode::Env, Mode::Volume]),
                ("CronJob a".into(), vec![Mode::Volume])
            ]
        );
        // The Deployment stops reading `t`.
        assert_eq!(
            apply(
                Kind::Deployment,
                watcher::Event::Apply(workload("a", &[], &[]))
            ),
            ["t"]
        );
        assert_eq!(
            names(&index, "t"),
            [("CronJob a".into(), vec![Mode::Volume])]
        );
        // Deleted.
        assert_eq!(
            apply(
                Kind::CronJob,
                watcher::Event::Delete(workload("a", &[], &["t", "u"]))
            ),
            ["t", "u"]
        );
        assert!(names(&index, "t").is_empty() && names(&index, "u").is_empty());
        assert_eq!(index.workloads(), 0);
        // A relist of Deployments that finds `b` (new) and not `a` (gone meanwhile).
        apply(
            Kind::Deployment,
            watcher::Event::Apply(workload("a", &["t"], &[])),
        );
        apply(Kind::Deployment, watcher::Event::Init);
        apply(
            Kind::Deployment,
            watcher::Event::InitApply(workload("b", &[], &["v"])),
        );
        assert_eq!(
            names(&index, "t").len(),
            1,
            "the old state serves until the relist is done"
        );
        assert_eq!(
            apply(Kind::Deployment, watcher::Event::InitDone),
            ["t", "v"]
        );
        assert!(names(&index, "t").is_empty());
        assert_eq!(
            names(&index, "v"),
            [("Deployment b".into(), vec![Mode::Volume])]
        );
        assert_eq!(index.workloads(), 1);
        assert!(index.readers("team-b", "v").is_empty());
    }

    #[test]
    fn an_owned_replica_set_is_not_a_consumer() {
        let index = ConsumerIndex::default();
        let mut owned = workload("web-5d4f", &["t"], &[]);
        owned.controlled = true;
        assert!(
            index
                .apply(Kind::ReplicaSet, &watcher::Event::Apply(owned.clone()))
                .is_empty()
        );
        assert!(index.readers("team-a", "t").is_empty());
        // A bare one is.
        owned.controlled = false;
        assert_eq!(
            index
                .apply(Kind::ReplicaSet, &watcher::Event::Apply(owned))
                .len(),
            1
        );
        assert_eq!(index.readers("team-a", "t").len(), 1);
    }
}
