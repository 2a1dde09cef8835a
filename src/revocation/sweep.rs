//! The leader's sweep of the revocation ConfigMaps ([`super::store`]): buckets whose day has
//! passed, legacy per-token ConfigMaps whose token expired, markers of ServiceKeys that are gone.

use super::EXPIRY_SLACK_SECS;
use super::store::{Kind, kind, params, selector};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, Preconditions};
use serde_json::json;
use std::collections::HashSet;

/// Deletes what denies nothing any more (operator leader, periodically): buckets whose day has
/// passed, legacy ConfigMaps whose token expired or whose key left the keyring (`kids`), and
/// — given `service_keys`, the uids of every ServiceKey — the markers of ServiceKeys that are
/// gone. Returns how many ConfigMaps were deleted.
pub async fn sweep(
    api: &Api<ConfigMap>,
    kids: &[String],
    service_keys: Option<&HashSet<String>>,
    now: Timestamp,
    may_write: impl Fn() -> bool,
) -> Result<usize, kube::Error> {
    let list = api.list(&ListParams::default().labels(&selector())).await?;
    let now = now.as_second();
    let mut deleted = 0;
    for cm in list {
        let name = cm.name_any();
        let doomed = match kind(&name) {
            Kind::Bucket { day } => day_ended(day).is_some_and(|end| end + EXPIRY_SLACK_SECS < now),
            Kind::Legacy => legacy_obsolete(&cm, kids, now),
            Kind::Markers => {
                if let Some(known) = service_keys
                    && may_write()
                {
                    drop_markers(api, &cm, known).await?;
                }
                false
            }
            Kind::Other => false,
        };
        if !doomed || !may_write() {
            continue;
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: cm.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(s)) if s.is_not_found() || s.is_conflict() => {}
            Err(e) => return Err(e),
        }
    }
    if deleted > 0 {
        tracing::info!(deleted, "dropped revocations that deny nothing any more");
    }
    Ok(deleted)
}

/// The end of a bucket's day, `YYYYMMDD`, in Unix seconds.
fn day_ended(day: &str) -> Option<i64> {
    let date = jiff::civil::Date::strptime("%Y%m%d", day).ok()?;
    let end = date
        .tomorrow()
        .ok()?
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()?;
    Some(end.timestamp().as_second())
}

/// Whether a legacy per-token ConfigMap can go: its token expired, or (never expiring) its key
/// is no longer among `kids`.
fn legacy_obsolete(cm: &ConfigMap, kids: &[String], now: i64) -> bool {
    let Some(data) = cm.data.as_ref() else {
        return true;
    };
    let expires = data
        .get("expires-at")
        .and_then(|t| t.parse::<Timestamp>().ok());
    match (expires, data.get("kid")) {
        (Some(exp), _) => exp.as_second() + EXPIRY_SLACK_SECS < now,
        (None, Some(kid)) => !kids.contains(kid),
        (None, None) => false,
    }
}

/// Removes from a marker shard the uids of ServiceKeys that no longer exist (their tokens are
/// refused anyway); a concurrent change of the shard makes it wait for the next sweep.
async fn drop_markers(
    api: &Api<ConfigMap>,
    cm: &ConfigMap,
    known: &HashSet<String>,
) -> Result<(), kube::Error> {
    let gone: serde_json::Map<String, serde_json::Value> = cm
        .data
        .iter()
        .flatten()
        .filter(|(uid, _)| !known.contains(*uid))
        .map(|(uid, _)| (uid.clone(), serde_json::Value::Null))
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    let patch = json!({"metadata": {"resourceVersion": cm.resource_version()}, "data": gone});
    match api
        .patch(&cm.name_any(), &params().0, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_conflict() || s.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_ends_with_its_day() {
        // 2025-12-07T00:00:00Z
        assert_eq!(day_ended("20251206"), Some(1_765_065_600));
        assert_eq!(day_ended("not a day"), None);
    }
}
