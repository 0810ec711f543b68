//! The reconcilers, in the shape of kube-rs's controller-rs: one per resource, sharing a
//! [`Context`]; status by server-side apply; events for every step; metrics.

pub mod compaction;
pub mod conditions;
pub mod context;
pub mod group;
pub mod metrics;
pub mod table;

pub use context::{Context, MemberAddresses};

/// The field manager of everything the operator applies.
pub const MANAGER: &str = "pg-paxos-operator";

/// Applies `status` to the status subresource of `object`, by server-side apply.
pub(crate) async fn apply_status<K>(
    ctx: &Context,
    object: &K,
    status: impl serde::Serialize,
) -> crate::error::Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    use kube::api::{Patch, PatchParams};
    use kube::ResourceExt;
    let api: kube::Api<K> =
        kube::Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}
