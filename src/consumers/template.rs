//! A workload as the consumer watch reads it: its name and, from its pod template, which
//! Secrets it reads and how — nothing else. The serde model below names only those fields, so
//! deserialising a Deployment allocates its name and its Secret references and skips the rest
//! (containers' images and commands, labels, annotations, managedFields, status); the object
//! is then reduced at once to [`SlimWorkload::reads`].
//!
//! Where a pod template reads a Secret:
//! - `volumes[].secret.secretName`: [`Mode::Volume`], or [`Mode::SubPath`] when a container
//!   mounts the volume with `subPath` or `subPathExpr` (both when some mount it one way and
//!   some the other; a volume no container mounts still references the Secret: `volume`);
//! - `volumes[].projected.sources[].secret.name`: [`Mode::Projected`], or `subPath` likewise;
//! - `containers[]` and `initContainers[]`: `env[].valueFrom.secretKeyRef.name`
//!   ([`Mode::Env`]) and `envFrom[].secretRef.name` ([`Mode::EnvFrom`]).
//!
//! The pod template is `spec.template` (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job)
//! or `spec.jobTemplate.spec.template` (CronJob). Ephemeral containers are never in templates.

use super::{Kind, Mode, Modes};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::{DynamicResourceScope, Resource};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// A watched workload, reduced to what the consumer index needs.
#[derive(Clone, Debug, Deserialize)]
#[serde(from = "raw::Object")]
pub struct SlimWorkload {
    /// Name, namespace and resourceVersion only (the watch resumes from the version).
    metadata: ObjectMeta,
    /// Whether it has a controlling owner (a ReplicaSet of a Deployment, a Job of a CronJob).
    pub controlled: bool,
    /// The Secrets its pod template reads, by name, each with the ways it reads it.
    pub reads: Vec<(String, Modes)>,
}

impl SlimWorkload {
    /// Whether it is a consumer of its own: ReplicaSets and Jobs with a controlling owner are
    /// not (their owner is).
    pub fn is_consumer(&self, kind: Kind) -> bool {
        !(self.controlled && matches!(kind, Kind::ReplicaSet | Kind::Job))
    }
}

impl Resource for SlimWorkload {
    /// The kind it was listed as (one type for the six kinds).
    type DynamicType = Kind;
    type Scope = DynamicResourceScope;

    fn kind(kind: &Kind) -> Cow<'_, str> {
        kind.as_str().into()
    }

    fn group(kind: &Kind) -> Cow<'_, str> {
        kind.group().into()
    }

    fn version(_: &Kind) -> Cow<'_, str> {
        "v1".into()
    }

    fn plural(kind: &Kind) -> Cow<'_, str> {
        kind.plural().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl From<raw::Object> for SlimWorkload {
    fn from(object: raw::Object) -> Self {
        let raw::Meta {
            name,
            namespace,
            resource_version,
            owner_references,
        } = object.metadata;
        let pod = object.spec.and_then(|spec| match spec.template {
            Some(template) => template.spec,
            None => spec.job_template?.spec?.template?.spec,
        });
        SlimWorkload {
            metadata: ObjectMeta {
                name,
                namespace,
                resource_version,
                ..ObjectMeta::default()
            },
            controlled: owner_references
                .into_iter()
                .flatten()
                .any(|r| r.controller == Some(true)),
            reads: pod.map(reads).unwrap_or_default(),
        }
    }
}

/// What a pod template reads, by Secret name.
fn reads(pod: raw::PodSpec) -> Vec<(String, Modes)> {
    let mut reads: BTreeMap<String, Modes> = BTreeMap::new();
    let mut read = |secret: Option<String>, mode: Mode| {
        if let Some(secret) = secret.filter(|s| !s.is_empty()) {
            reads.entry(secret).or_default().insert(mode);
        }
    };
    // How each volume is mounted: (whole, with a subPath).
    let mut mounts: HashMap<String, (bool, bool)> = HashMap::new();
    let containers = pod.containers.into_iter().flatten();
    for container in containers.chain(pod.init_containers.into_iter().flatten()) {
        for env in container.env.into_iter().flatten() {
            let secret = env.value_from.and_then(|v| v.secret_key_ref);
            read(secret.and_then(|s| s.name), Mode::Env);
        }
        for from in container.env_from.into_iter().flatten() {
            read(from.secret_ref.and_then(|s| s.name), Mode::EnvFrom);
        }
        for mount in container.volume_mounts.into_iter().flatten() {
            let sub = [mount.sub_path, mount.sub_path_expr]
                .into_iter()
                .flatten()
                .any(|p| !p.is_empty());
            let how = mounts.entry(mount.name).or_default();
            if sub {
                how.1 = true;
            } else {
                how.0 = true;
            }
        }
    }
    for volume in pod.volumes.into_iter().flatten() {
        let (whole, sub) = mounts.get(&volume.name).copied().unwrap_or_default();
        let mut read_volume = |secret: Option<String>, mode: Mode| {
            if whole || !sub {
                read(secret.clone(), mode);
            }
            if sub {
                read(secret, Mode::SubPath);
            }
        };
        if let Some(secret) = volume.secret {
            read_volume(secret.secret_name, Mode::Volume);
        }
        let sources = volume
            .projected
            .and_then(|p| p.sources)
            .into_iter()
            .flatten();
        for source in sources {
            read_volume(source.secret.and_then(|s| s.name), Mode::Projected);
        }
    }
    reads.into_iter().collect()
}

/// The fields read from the API server's JSON; everything else is skipped unallocated.
mod raw {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Object {
        #[serde(default)]
        pub metadata: Meta,
        pub spec: Option<Spec>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    pub struct Meta {
        pub name: Option<String>,
        pub namespace: Option<String>,
        pub resource_version: Option<String>,
        pub owner_references: Option<Vec<OwnerReference>>,
    }

    #[derive(Deserialize)]
    pub struct OwnerReference {
        pub controller: Option<bool>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Spec {
        pub template: Option<Template>,
        pub job_template: Option<JobTemplate>,
    }

    #[derive(Deserialize)]
    pub struct JobTemplate {
        pub spec: Option<JobSpec>,
    }

    #[derive(Deserialize)]
    pub struct JobSpec {
        pub template: Option<Template>,
    }

    #[derive(Deserialize)]
    pub struct Template {
        pub spec: Option<PodSpec>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct PodSpec {
        pub volumes: Option<Vec<Volume>>,
        pub containers: Option<Vec<Container>>,
        pub init_containers: Option<Vec<Container>>,
    }

    #[derive(Deserialize)]
    pub struct Volume {
        pub name: String,
        pub secret: Option<SecretVolume>,
        pub projected: Option<Projected>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct SecretVolume {
        pub secret_name: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct Projected {
        pub sources: Option<Vec<Projection>>,
    }

    #[derive(Deserialize)]
    pub struct Projection {
        pub secret: Option<Named>,
    }

    #[derive(Deserialize)]
    pub struct Named {
        pub name: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Container {
        pub env: Option<Vec<Env>>,
        pub env_from: Option<Vec<EnvFrom>>,
        pub volume_mounts: Option<Vec<Mount>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Env {
        pub value_from: Option<EnvSource>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct EnvSource {
        pub secret_key_ref: Option<Named>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct EnvFrom {
        pub secret_ref: Option<Named>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Mount {
        pub name: String,
        pub sub_path: Option<String>,
        pub sub_path_expr: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reads_of(object: serde_json::Value) -> Vec<(String, Vec<Mode>)> {
        let workload: SlimWorkload = serde_json::from_value(object).unwrap();
        workload
            .reads
            .into_iter()
            .map(|(secret, modes)| (secret, modes.iter().collect()))
            .collect()
    }

    fn deployment(pod: serde_json::Value) -> serde_json::Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "app", "namespace": "team-a", "resourceVersion": "7",
                            "annotations": {"big": "x".repeat(1000)},
                            "managedFields": [{"manager": "kubectl"}]},
               "spec": {"replicas": 2, "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod}},
               "status": {"replicas": 2}})
    }

    #[test]
    fn every_way_of_reading_a_secret_is_found() {
        let pod = json!({
            "volumes": [
                {"name": "plain", "secret": {"secretName": "by-volume"}},
                {"name": "proj", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "sa"}},
                    {"secret": {"name": "by-projection"}},
                    {"configMap": {"name": "not-a-secret"}}]}},
                {"name": "file", "secret": {"secretName": "by-subpath"}},
                {"name": "expr", "secret": {"secretName": "by-subpath-expr"}},
                {"name": "both", "secret": {"secretName": "mounted-twice"}},
                {"name": "cfg", "configMap": {"name": "not-a-secret-either"}}
            ],
            "initContainers": [{"name": "init", "image": "busybox",
                "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "by-init-env", "key": "token"}}}]}],
            "containers": [{"name": "main", "image": "app:1", "command": ["run"],
                "env": [{"name": "PLAIN", "value": "x"},
                        {"name": "FIELD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "by-env", "key": "token"}}}],
                "envFrom": [{"secretRef": {"name": "by-env-from"}}, {"configMapRef": {"name": "cm"}}],
                "volumeMounts": [
                    {"name": "plain", "mountPath": "/a"},
                    {"name": "proj", "mountPath": "/b"},
                    {"name": "file", "mountPath": "/c/token", "subPath": "token"},
                    {"name": "expr", "mountPath": "/d", "subPathExpr": "$(POD)"},
                    {"name": "both", "mountPath": "/e"},
                    {"name": "both", "mountPath": "/f/token", "subPath": "token"}]}]
        });
        assert_eq!(
            reads_of(deployment(pod)),
            [
                ("by-env".to_owned(), vec![Mode::Env]),
                ("by-env-from".to_owned(), vec![Mode::EnvFrom]),
                ("by-init-env".to_owned(), vec![Mode::Env]),
                ("by-projection".to_owned(), vec![Mode::Projected]),
                ("by-subpath".to_owned(), vec![Mode::SubPath]),
                ("by-subpath-expr".to_owned(), vec![Mode::SubPath]),
                ("by-volume".to_owned(), vec![Mode::Volume]),
                (
                    "mounted-twice".to_owned(),
                    vec![Mode::SubPath, Mode::Volume]
                ),
            ]
        );
    }

    #[test]
    fn a_cronjob_reads_through_its_job_template() {
        let cronjob = json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "export", "namespace": "team-a"},
            "spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template": {"spec": {
                "containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "t"}}]}]}}}}}});
        assert_eq!(reads_of(cronjob), [("t".to_owned(), vec![Mode::EnvFrom])]);
    }

    #[test]
    fn owned_replica_sets_and_jobs_are_not_consumers_of_their_own() {
        let owned = |kind: &str| -> SlimWorkload {
            serde_json::from_value(json!({"kind": kind, "metadata": {"name": "x",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d",
                                     "uid": "u", "controller": true}]}}))
            .unwrap()
        };
        assert!(!owned("ReplicaSet").is_consumer(Kind::ReplicaSet));
        assert!(!owned("Job").is_consumer(Kind::Job));
        assert!(owned("Deployment").is_consumer(Kind::Deployment));
        let bare: SlimWorkload =
            serde_json::from_value(json!({"metadata": {"name": "x", "ownerReferences": [
                {"apiVersion": "v1", "kind": "X", "name": "y", "uid": "u"}]}}))
            .unwrap();
        assert!(
            bare.is_consumer(Kind::ReplicaSet),
            "an owner that is not a controller"
        );
    }

    #[test]
    fn only_name_namespace_and_version_are_kept_of_the_metadata() {
        let workload: SlimWorkload = serde_json::from_value(deployment(json!({}))).unwrap();
        assert_eq!(workload.meta().name.as_deref(), Some("app"));
        assert_eq!(workload.meta().namespace.as_deref(), Some("team-a"));
        assert_eq!(workload.meta().resource_version.as_deref(), Some("7"));
        assert!(workload.meta().annotations.is_none() && workload.meta().managed_fields.is_none());
        assert!(workload.reads.is_empty() && !workload.controlled);
        assert_eq!(
            SlimWorkload::url_path(&Kind::CronJob, Some("team-a")),
            "/apis/batch/v1/namespaces/team-a/cronjobs"
        );
    }
}
