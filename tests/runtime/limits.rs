//! Per-tenant rate limits (GCRA) kept in the store, so every server and worker on it shares them.

use crate::both_stores;
use crate::harness::{Env, TENANT};
use std::time::Duration;

both_stores!(rate_limits_admit_a_burst_then_say_when_to_retry);

async fn rate_limits_admit_a_burst_then_say_when_to_retry(env: Env) {
    let s = &env.store;
    for i in 0..5 {
        assert_eq!(s.rate_limit(TENANT, "api", 10.0, 5).await.unwrap(), None, "request {i} of the burst");
    }
    let wait = s.rate_limit(TENANT, "api", 10.0, 5).await.unwrap().expect("the 6th request in a burst of 5 is refused");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_millis(100),
        "at 10/s the next slot is at most 100 ms away: {wait:?}"
    );
    // Another tenant, and another limit of the same tenant, are untouched.
    assert_eq!(s.rate_limit("globex", "api", 10.0, 5).await.unwrap(), None);
    assert_eq!(s.rate_limit(TENANT, "hooks", 10.0, 5).await.unwrap(), None);
    tokio::time::sleep(wait + Duration::from_millis(5)).await;
    assert_eq!(s.rate_limit(TENANT, "api", 10.0, 5).await.unwrap(), None, "admitted again after the wait it was given");
    assert!(s.rate_limit(TENANT, "api", 10.0, 5).await.unwrap().is_some(), "but only one, at the average rate");
    env.shutdown().await;
}
