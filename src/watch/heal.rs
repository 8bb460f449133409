//! The heal rate limit, per app: at most `max_attempts` heals within `window`, a
//! backoff that doubles after each failed heal, and after `max_attempts` failures in
//! a row the app is given up on — reported once, never retried in a loop — until
//! its desired spec changes or its drift clears by other means. Pure: the caller
//! passes the time.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// The limits (`watch --heal-max-attempts`, `--heal-window`, `--heal-backoff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealPolicy {
    pub max_attempts: u32,
    pub window: Duration,
    /// The wait after the first failure; doubled after each further one.
    pub backoff: Duration,
}

impl Default for HealPolicy {
    fn default() -> Self {
        Self { max_attempts: 3, window: Duration::from_secs(900), backoff: Duration::from_secs(10) }
    }
}

/// Whether an app may be healed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Allowed,
    /// Backing off after a failure, until then.
    Waiting(Instant),
    /// Given up on; the string says why. `newly` the first time it is answered.
    GivenUp { reason: String, newly: bool },
}

#[derive(Debug, Default)]
struct AppState {
    attempts: VecDeque<Instant>,
    failures_in_a_row: u32,
    not_before: Option<Instant>,
    given_up: Option<String>,
    given_up_told: bool,
}

/// The limiter's memory.
#[derive(Debug)]
pub struct HealLimiter {
    policy: HealPolicy,
    apps: BTreeMap<String, AppState>,
}

impl HealLimiter {
    pub fn new(policy: HealPolicy) -> Self {
        Self { policy, apps: BTreeMap::new() }
    }

    pub fn policy(&self) -> HealPolicy {
        self.policy
    }

    /// May `app` be healed at `now`?
    pub fn gate(&mut self, app: &str, now: Instant) -> Gate {
        let policy = self.policy;
        let state = self.apps.entry(app.to_string()).or_default();
        while state.attempts.front().is_some_and(|t| now.duration_since(*t) > policy.window) {
            state.attempts.pop_front();
        }
        if state.given_up.is_none() && state.attempts.len() >= policy.max_attempts as usize {
            state.given_up = Some(format!(
                "healed {} times within {} s and it drifted again each time; something keeps undoing it",
                state.attempts.len(),
                policy.window.as_secs()
            ));
        }
        if let Some(reason) = &state.given_up {
            let newly = !state.given_up_told;
            state.given_up_told = true;
            return Gate::GivenUp { reason: reason.clone(), newly };
        }
        match state.not_before {
            Some(t) if now < t => Gate::Waiting(t),
            _ => Gate::Allowed,
        }
    }

    /// A heal of `app` starts now.
    pub fn started(&mut self, app: &str, now: Instant) {
        self.apps.entry(app.to_string()).or_default().attempts.push_back(now);
    }

    /// The heal of `app` worked.
    pub fn succeeded(&mut self, app: &str) {
        let state = self.apps.entry(app.to_string()).or_default();
        state.failures_in_a_row = 0;
        state.not_before = None;
    }

    /// The heal of `app` failed (or was refused): back off, and give up after
    /// `max_attempts` in a row. Returns the wait before the next try, or `None` when
    /// it has now been given up on.
    pub fn failed(&mut self, app: &str, now: Instant, why: &str) -> Option<Duration> {
        let policy = self.policy;
        let state = self.apps.entry(app.to_string()).or_default();
        state.failures_in_a_row += 1;
        if state.failures_in_a_row >= policy.max_attempts {
            state.given_up = Some(format!("{} heals in a row failed; last: {why}", state.failures_in_a_row));
            // The caller reports it now, with this answer.
            state.given_up_told = true;
            return None;
        }
        let wait = policy.backoff.saturating_mul(1 << (state.failures_in_a_row - 1).min(16));
        state.not_before = Some(now + wait);
        Some(wait)
    }

    /// The drift of `app` cleared: failures and a give-up are forgotten, but the heals
    /// within the window still count (an app that keeps drifting is rate-limited).
    pub fn cleared(&mut self, app: &str) {
        if let Some(state) = self.apps.get_mut(app) {
            state.failures_in_a_row = 0;
            state.not_before = None;
            state.given_up = None;
            state.given_up_told = false;
                if state.attempts.is_empty() {
                self.apps.remove(app);
            }
        }
    }

    /// Forgets `app` entirely: its desired spec changed, so it is tried afresh.
    pub fn forget(&mut self, app: &str) {
        self.apps.remove(app);
    }

    /// Apps given up on.
    pub fn given_up(&self) -> impl Iterator<Item = &str> {
        self.apps.iter().filter(|(_, s)| s.given_up.is_some()).map(|(a, _)| a.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const P: HealPolicy = HealPolicy { max_attempts: 3, window: Duration::from_secs(60), backoff: Duration::from_secs(2) };

    #[test]
    fn failures_back_off_doubling_then_the_app_is_given_up_once() {
        let mut l = HealLimiter::new(P);
        let t0 = Instant::now();
        assert_eq!(l.gate("web", t0), Gate::Allowed);
        l.started("web", t0);
        assert_eq!(l.failed("web", t0, "crashed"), Some(Duration::from_secs(2)));
        assert_eq!(l.gate("web", t0 + Duration::from_secs(1)), Gate::Waiting(t0 + Duration::from_secs(2)));
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(l.gate("web", t1), Gate::Allowed);
        l.started("web", t1);
        assert_eq!(l.failed("web", t1, "crashed"), Some(Duration::from_secs(4)));
        let t2 = t1 + Duration::from_secs(4);
        assert_eq!(l.gate("web", t2), Gate::Allowed);
        l.started("web", t2);
        assert_eq!(l.failed("web", t2, "crashed again"), None);
        // `failed` answered None: the caller told it then, so the gate does not again.
        let Gate::GivenUp { reason, newly: false } = l.gate("web", t2 + Duration::from_secs(600)) else { panic!() };
        assert!(reason.contains("3 heals in a row failed; last: crashed again"), "{reason}");
        assert_eq!(l.given_up().collect::<Vec<_>>(), ["web"]);
        // Other apps are not affected; forgetting starts afresh.
        assert_eq!(l.gate("api", t2), Gate::Allowed);
        l.forget("web");
        assert_eq!(l.gate("web", t2), Gate::Allowed);
    }

    #[test]
    fn successful_heals_are_rate_limited_within_the_window() {
        let mut l = HealLimiter::new(P);
        let t0 = Instant::now();
        for i in 0..3 {
            let t = t0 + Duration::from_secs(i);
            assert_eq!(l.gate("web", t), Gate::Allowed);
            l.started("web", t);
            l.succeeded("web");
            l.cleared("web");
        }
        assert!(matches!(l.gate("web", t0 + Duration::from_secs(5)), Gate::GivenUp { newly: true, .. }));
    }
}
