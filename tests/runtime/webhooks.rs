//! `webhook.send` as receivers see it: Standard Webhooks signatures checked by the official `standardwebhooks`
//! Python library, the same `webhook-id` on every retry, both signatures during a secret rotation, and
//! redirects refused.

use crate::both_stores;
use crate::harness::{python_sign, Env, Hit, Peer, Reply};
use serde_json::json;
use std::io::Write as _;
use std::process::{Command, Stdio};

both_stores!(signatures_verify_with_the_official_library, redirects_are_not_followed);

const NEW: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// Verifies one received request with `standardwebhooks` (pip); answers the verified payload, or the error.
fn verify(secret: &str, hit: &Hit) -> Result<serde_json::Value, String> {
    let headers = json!({
        "webhook-id": hit.header("webhook-id"),
        "webhook-timestamp": hit.header("webhook-timestamp"),
        "webhook-signature": hit.header("webhook-signature"),
    });
    let script = "import sys, json\nfrom standardwebhooks.webhooks import Webhook\n\
        body = sys.stdin.buffer.read()\n\
        print(json.dumps(Webhook(sys.argv[1]).verify(body, json.loads(sys.argv[2]))))\n";
    let mut child = Command::new("python3")
        .args(["-c", script, secret, &headers.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test (.ci/run installs the `standardwebhooks` package)");
    child.stdin.take().expect("stdin").write_all(&hit.body).expect("write the body");
    let out = child.wait_with_output().expect("python3 ran");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

async fn signatures_verify_with_the_official_library(env: Env) {
    let peer = Peer::start().await;
    peer.script("/in", [Reply::status(503)]);
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: notify
    uses: webhook.send
    retry: { max_attempts: 2, initial_delay: 1s, jitter: none }
    with:
      url: "BASE/in"
      secret: [ "NEW", "OLD" ]
      event: customer.upgraded
      body: { customer: "{{ trigger.body.id }}", plan: PRO }
"#
    .replace("BASE", &peer.url)
    .replace("NEW", NEW)
    .replace("OLD", OLD);
    let rec = env.run(&yaml, json!({ "id": "cus_42" })).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    let hits = peer.hits("/in");
    assert_eq!(hits.len(), 2);
    let id = hits[0].header("webhook-id");
    assert!(id.starts_with("msg_"), "{id}");
    assert_eq!(hits[1].header("webhook-id"), id, "the webhook-id must be the same on every retry");
    assert!(
        hits[1].header("webhook-timestamp").parse::<u64>().unwrap()
            > hits[0].header("webhook-timestamp").parse::<u64>().unwrap(),
        "each attempt carries its own timestamp"
    );
    assert_eq!(hits[0].body, hits[1].body, "a retry sends the same body (the event's own time, not the attempt's)");
    for hit in &hits {
        assert_eq!(hit.header("webhook-signature").split(' ').count(), 2, "one signature per secret while rotating");
        for secret in [NEW, OLD] {
            let payload = verify(secret, hit)
                .unwrap_or_else(|e| panic!("standardwebhooks refused the signature with {secret}: {e}"));
            assert_eq!(payload["type"], "customer.upgraded");
            assert_eq!(payload["data"], json!({ "customer": "cus_42", "plan": "PRO" }));
        }
        assert!(verify("whsec_dGhpcyBpcyBhIGRpZmZlcmVudCBrZXkhIQ==", hit).is_err(), "a wrong secret must not verify");
    }
    let out = &rec["steps"]["notify"]["output"];
    assert_eq!(out["status"], 200);
    assert_eq!(out["webhook_id"], id);
    assert_eq!(out["attempt"], 2);
    env.shutdown().await;
}

async fn redirects_are_not_followed(env: Env) {
    let peer = Peer::start().await;
    peer.script("/in", [Reply::status(302).header("location", "/elsewhere")]);
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: notify
    uses: webhook.send
    with: { url: "BASE/in", secret: "NEW", event: ping }
"#
    .replace("BASE", &peer.url)
    .replace("NEW", NEW);
    let rec = env.run(&yaml, json!({})).await;
    assert_eq!(rec["status"], "failed", "{rec:#}");
    assert_eq!(peer.hits("/in").len(), 1, "a redirect is a failure, not retried");
    assert!(peer.hits("/elsewhere").is_empty(), "the redirect was followed");
    let msg = rec["error"]["message"].as_str().unwrap();
    assert!(msg.contains("302") && msg.contains("update the URL"), "{msg}");
    env.shutdown().await;
}

#[test]
fn inbound_signatures_from_the_official_library_verify() {
    use sluice_connectors::verify::{standard_webhooks, VerifyError};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let body = br#"{"type":"user.created","data":{"id":"u_1"}}"#;
    let headers = |id: &str, ts: u64, sig: String| {
        std::collections::HashMap::from([
            ("webhook-id".to_string(), id.to_string()),
            ("webhook-timestamp".to_string(), ts.to_string()),
            ("webhook-signature".to_string(), sig),
        ])
    };
    let verify = |secrets: &[&str], h: &std::collections::HashMap<String, String>, body: &[u8]| {
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        standard_webhooks(&secrets, |k| h.get(k).map(String::as_str), body, now)
    };
    let valid = headers("msg_a", now, python_sign(NEW, "msg_a", now, body));
    assert_eq!(verify(&[NEW], &valid, body).map(|v| v.id), Ok("msg_a".to_string()));
    // Rotation: signed with the old secret, verified while both are configured.
    let rotated = headers("msg_b", now, python_sign(OLD, "msg_b", now, body));
    assert!(verify(&[NEW, OLD], &rotated, body).is_ok());
    assert_eq!(verify(&[NEW], &rotated, body), Err(VerifyError::NoMatch), "the old secret alone is gone");
    assert_eq!(
        verify(&[NEW], &valid, br#"{"type":"user.created","data":{"id":"u_2"}}"#),
        Err(VerifyError::NoMatch),
        "tampered"
    );
    let old = now - 600;
    let expired = headers("msg_c", old, python_sign(NEW, "msg_c", old, body));
    assert_eq!(verify(&[NEW], &expired, body), Err(VerifyError::TooOld));
    let mut missing = valid.clone();
    missing.remove("webhook-signature");
    assert_eq!(verify(&[NEW], &missing, body), Err(VerifyError::MissingHeader("webhook-signature")));
    assert_eq!(verify(&[OLD], &valid, body), Err(VerifyError::NoMatch), "wrong secret");
}
