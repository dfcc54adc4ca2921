//! Inbound webhooks signed with the official `standardwebhooks` library: valid, rotated, tampered, expired,
//! wrong secret, missing headers, replayed id; HMAC-SHA256; every refusal a 4xx that starts nothing.

use crate::harness::*;
use crate::on_both;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::sync::Arc;

on_both!(standard_webhooks_are_verified_deduplicated_and_stored, hmac_webhooks_and_unverified_ones);

const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const WRONG: &str = "whsec_dGhpcyBpcyBub3QgdGhlIHJpZ2h0IG9uZQ==";

fn hook_pipeline() -> &'static str {
    "version: 1\nname: signups\ntriggers:\n  - webhook:\n      path: signups\n      verify:\n        scheme: standard-webhooks\n        secret: \"{{ secrets.SIGNUP_WHSEC }}\"\nsteps:\n  - id: take\n    uses: transform\n    with:\n      output:\n        email: \"{{ trigger.body.email }}\"\n        id: \"{{ trigger.webhook_id }}\"\n"
}

async fn send(api: &Api, id: Option<&str>, ts: Option<u64>, sig: Option<&str>, body: &[u8]) -> Answer {
    let mut h: Vec<(&str, String)> = Vec::new();
    if let Some(id) = id {
        h.push(("webhook-id", id.to_string()));
    }
    if let Some(ts) = ts {
        h.push(("webhook-timestamp", ts.to_string()));
    }
    if let Some(sig) = sig {
        h.push(("webhook-signature", sig.to_string()));
    }
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    api.send("POST", "/hooks/acme/signups", Some(("application/json", body.to_vec())), &h).await
}

async fn standard_webhooks_are_verified_deduplicated_and_stored(backing: Arc<Backing>) {
    let server = Server::start(&backing).await;
    let api = server.api(&server.admin().tenant("acme", Value::Null).await);
    api.put_json("/v1/secrets/SIGNUP_WHSEC", json!({ "value": OLD })).await.expect(200);
    api.put_yaml("signups", hook_pipeline()).await.expect(201);
    let body = br#"{"email":"ada@example.com"}"#;
    let now = now_s();

    // Valid: 202 once stored; the run records the webhook-id.
    let sig = python_sign(OLD, "msg_1", now, body);
    let ok = send(&api, Some("msg_1"), Some(now), Some(&sig), body).await;
    let run = ok.expect(202)["run_id"].as_str().unwrap().to_string();
    let rec = api.wait_run(&run).await;
    assert_eq!(rec["status"], "succeeded", "{rec}");
    assert_eq!(rec["trigger"]["kind"], "webhook");
    assert_eq!(rec["trigger"]["webhook_id"], "msg_1");
    assert_eq!(rec["steps"]["take"]["output"], json!({ "email": "ada@example.com", "id": "msg_1" }));
    assert!(rec["trigger"]["headers"].get("webhook-signature").is_none(), "signatures are not handed to pipelines");

    // Replayed id: the first run's id, nothing started.
    let dup = send(&api, Some("msg_1"), Some(now), Some(&sig), body).await;
    assert_eq!(dup.expect(200)["run_id"], run.as_str());
    assert_eq!(dup.body["duplicate"], true);

    // Refusals: a 4xx with the error body; nothing started.
    let cases: Vec<(&str, Answer, &str)> = vec![
        (
            "tampered body",
            send(
                &api,
                Some("msg_2"),
                Some(now),
                Some(&python_sign(OLD, "msg_2", now, body)),
                br#"{"email":"eve@example.com"}"#,
            )
            .await,
            "invalid_signature",
        ),
        (
            "tampered id",
            send(&api, Some("msg_3x"), Some(now), Some(&python_sign(OLD, "msg_3", now, body)), body).await,
            "invalid_signature",
        ),
        (
            "expired",
            send(&api, Some("msg_4"), Some(now - 400), Some(&python_sign(OLD, "msg_4", now - 400, body)), body).await,
            "stale_timestamp",
        ),
        (
            "from the future",
            send(&api, Some("msg_5"), Some(now + 400), Some(&python_sign(OLD, "msg_5", now + 400, body)), body).await,
            "stale_timestamp",
        ),
        (
            "wrong secret",
            send(&api, Some("msg_6"), Some(now), Some(&python_sign(WRONG, "msg_6", now, body)), body).await,
            "invalid_signature",
        ),
        ("no id", send(&api, None, Some(now), Some(&sig), body).await, "missing_signature"),
        ("no timestamp", send(&api, Some("msg_7"), None, Some(&sig), body).await, "missing_signature"),
        ("no signature", send(&api, Some("msg_8"), Some(now), None, body).await, "missing_signature"),
        (
            "garbage signature",
            send(&api, Some("msg_9"), Some(now), Some("v1,bm90IGEgc2lnbmF0dXJl"), body).await,
            "invalid_signature",
        ),
    ];
    for (what, answer, code) in &cases {
        assert_eq!(answer.status, 401, "{what}: {}", answer.text);
        assert_eq!(answer.body["error"]["code"], *code, "{what}: {}", answer.text);
    }
    // A timestamp that overflows any arithmetic, a body nested too deep: refused, the server stays up.
    let huge = api
        .send(
            "POST",
            "/hooks/acme/signups",
            Some(("application/json", body.to_vec())),
            &[
                ("webhook-id", "msg_big"),
                ("webhook-timestamp", "18446744073709551615"),
                ("webhook-signature", sig.as_str()),
            ],
        )
        .await;
    huge.expect_error(401, "stale_timestamp");
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let deep_sig = python_sign(OLD, "msg_deep", now, deep.as_bytes());
    send(&api, Some("msg_deep"), Some(now), Some(&deep_sig), deep.as_bytes()).await.expect_error(400, "too_deep");
    assert_eq!(api.run_ids("signups").await.len(), 1, "a refused webhook started a run");
    // A sender that rotates signs with both secrets in one header: accepted; credentials in headers are
    // not handed to the pipeline.
    let both = format!("{} {}", python_sign(WRONG, "msg_two", now, body), python_sign(OLD, "msg_two", now, body));
    let two = api
        .send(
            "POST",
            "/hooks/acme/signups",
            Some(("application/json", body.to_vec())),
            &[
                ("webhook-id", "msg_two"),
                ("webhook-timestamp", &now.to_string()),
                ("webhook-signature", both.as_str()),
                ("x-gitlab-token", "glt-secret-token"),
                ("x-request-id", "req-1"),
            ],
        )
        .await;
    let two_run = two.expect(202)["run_id"].as_str().unwrap().to_string();
    let rec = api.wait_run(&two_run).await;
    assert_eq!(rec["trigger"]["headers"]["x-request-id"], "req-1");
    assert!(rec["trigger"]["headers"].get("x-gitlab-token").is_none(), "{}", rec["trigger"]["headers"]);

    // Rotation: while both secrets are set, messages signed with either are accepted.
    api.put_json("/v1/secrets/SIGNUP_WHSEC", json!({ "value": format!("{NEW} {OLD}") })).await.expect(200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // opened secrets are reused for 1 s
    for (i, secret) in [NEW, OLD].iter().enumerate() {
        let id = format!("msg_rot_{i}");
        let s = python_sign(secret, &id, now, body);
        send(&api, Some(&id), Some(now), Some(&s), body).await.expect(202);
    }
    // After the rotation ends, the old secret no longer verifies.
    api.put_json("/v1/secrets/SIGNUP_WHSEC", json!({ "value": NEW })).await.expect(200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let s = python_sign(OLD, "msg_old", now, body);
    send(&api, Some("msg_old"), Some(now), Some(&s), body).await.expect_error(401, "invalid_signature");
    assert_eq!(api.run_ids("signups").await.len(), 4);
    // Unknown tenant or path: 404 like any missing resource.
    api.send("POST", "/hooks/acme/nope", Some(("application/json", body.to_vec())), &[])
        .await
        .expect_error(404, "not_found");
    api.send("POST", "/hooks/nobody/signups", Some(("application/json", body.to_vec())), &[])
        .await
        .expect_error(404, "not_found");
}

async fn hmac_webhooks_and_unverified_ones(backing: Arc<Backing>) {
    let server = Server::start(&backing).await;
    let api = server.api(&server.admin().tenant("acme", Value::Null).await);
    api.put_json("/v1/secrets/GH", json!({ "value": "gh-hook-secret" })).await.expect(200);
    let p = "version: 1\nname: gh\ntriggers:\n  - webhook:\n      path: github/push\n      verify: { scheme: hmac-sha256, secret: \"{{ secrets.GH }}\", header: x-hub-signature-256 }\nsteps:\n  - id: a\n    uses: transform\n    with: { output: \"{{ trigger.body.ref }}\" }\n";
    api.put_yaml("gh", p).await.expect(201);
    let body = br#"{"ref":"refs/heads/main"}"#;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"gh-hook-secret").unwrap();
    mac.update(body);
    let sig = format!("sha256={}", hex_encode(&mac.finalize().into_bytes()));
    let h = [("x-hub-signature-256", sig.as_str()), ("x-github-delivery", "d-1")];
    let ok = api.send("POST", "/hooks/acme/github/push", Some(("application/json", body.to_vec())), &h).await;
    let run = ok.expect(202)["run_id"].as_str().unwrap().to_string();
    assert_eq!(api.wait_run(&run).await["steps"]["a"]["output"], "refs/heads/main");
    let bad = [("x-hub-signature-256", "sha256=00")];
    api.send("POST", "/hooks/acme/github/push", Some(("application/json", body.to_vec())), &bad)
        .await
        .expect_error(401, "invalid_signature");
    api.send("POST", "/hooks/acme/github/push", Some(("application/json", body.to_vec())), &[])
        .await
        .expect_error(401, "missing_signature");
    // Unverified hooks de-duplicate on Idempotency-Key; a JSON body that does not parse is refused.
    let open = "version: 1\nname: open\ntriggers:\n  - webhook: { path: open }\nsteps:\n  - id: a\n    uses: transform\n    with: { output: \"{{ trigger.body }}\" }\n";
    api.put_yaml("open", open).await.expect(201);
    let k = [("idempotency-key", "abc")];
    let first = api.send("POST", "/hooks/acme/open", Some(("text/plain", b"hello".to_vec())), &k).await;
    let again = api.send("POST", "/hooks/acme/open", Some(("text/plain", b"hello".to_vec())), &k).await;
    assert_eq!(first.expect(202)["run_id"], again.expect(200)["run_id"]);
    let run = first.body["run_id"].as_str().unwrap();
    assert_eq!(api.wait_run(run).await["steps"]["a"]["output"], "hello");
    api.send("POST", "/hooks/acme/open", Some(("application/json", b"{oops".to_vec())), &[])
        .await
        .expect_error(400, "invalid_json");
    // A second pipeline may not take a path that is taken.
    api.put_yaml("open2", &open.replace("name: open", "name: open2")).await.expect_error(409, "webhook_path_taken");
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
