//! Fleet audits: every live agent re-hashes its current release against its
//! manifest, at once, and answers with what differs.

use shoal_node::NodeError;
use shoal_node::client::{Client, unexpected};
use shoal_proto::{AuditSummary, MAX_CONTROL, Msg, Role};
use std::net::SocketAddr;
use std::time::Duration;

/// One host's audit, or why it could not be had.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HostAudit {
    pub host: String,
    pub dc: String,
    #[serde(flatten)]
    pub summary: Option<AuditSummary>,
    pub error: Option<String>,
}

impl HostAudit {
    pub fn clean(&self) -> bool {
        self.summary.as_ref().is_some_and(|s| s.clean)
    }
}

/// Asks every agent the tracker has heard from within `live_within` to audit.
pub async fn audit_fleet(
    client: &Client,
    tracker: SocketAddr,
    tracker_host: &str,
    live_within: Duration,
    deadline: Duration,
) -> Result<Vec<HostAudit>, NodeError> {
    let t = client.connect(tracker, tracker_host).await?;
    let hosts = match t
        .request(&Msg::GetFleet, MAX_CONTROL, Duration::from_secs(10))
        .await?
    {
        Msg::Fleet(f) => f.hosts,
        other => return Err(unexpected(tracker_host, "GetFleet", &other)),
    };
    t.close();
    let jobs = hosts
        .into_iter()
        .filter(|h| h.role == Role::Agent && Duration::from_secs(h.last_seen_s) <= live_within)
        .map(|h| async move {
            let result = async {
                let addr: SocketAddr = h
                    .addr
                    .as_deref()
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| "the tracker has no address for it".to_string())?;
                let c = client
                    .connect(addr, &h.host)
                    .await
                    .map_err(|e| e.to_string())?;
                let r = c.request(&Msg::Audit, MAX_CONTROL, deadline).await;
                c.close();
                match r.map_err(|e| e.to_string())? {
                    Msg::Audited(s) => Ok(*s),
                    other => Err(format!("answered Audit with {}", other.name())),
                }
            }
            .await;
            let (summary, error) = match result {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e)),
            };
            HostAudit {
                host: h.host,
                dc: h.dc,
                summary,
                error,
            }
        });
    Ok(futures_util::future::join_all(jobs).await)
}
