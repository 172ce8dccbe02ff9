//! Login throttling against brute force and credential stuffing, decided from counters
//! kept in the database (so it holds across instances):
//!
//! - per account and client address: a few free failures, then each further attempt waits
//!   twice as long as the one before (up to `login_max_delay_secs`);
//! - per account, from any address: at most `login_max_failures_per_account` failures per
//!   window, then the account refuses attempts until the window ends (and then accepts the
//!   right password again: a lock is never permanent);
//! - per client address, across accounts: at most `login_max_failures_per_ip` per window.
//!
//! Keys do not depend on whether the username exists, so throttling answers the same for
//! known and unknown usernames.

use crate::config::Settings;
use crate::crypto::token_hash;
use crate::store::Counter;

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub window: i64,
    pub max_per_account: i64,
    pub max_per_ip: i64,
    pub free_per_pair: i64,
    pub max_delay: i64,
}

impl Policy {
    pub fn from(s: &Settings) -> Policy {
        Policy {
            window: s.login_window_secs,
            max_per_account: s.login_max_failures_per_account,
            max_per_ip: s.login_max_failures_per_ip,
            free_per_pair: s.login_free_failures,
            max_delay: s.login_max_delay_secs,
        }
    }

    /// The most failed guesses at one account in any hour, whatever the number of
    /// addresses. Windows start at the first failure after the previous one ended, so an
    /// hour can see the tail of one window and then full ones: `max * (3600 + w - 1) / w`.
    pub fn max_guesses_per_account_per_hour(&self) -> i64 {
        self.max_per_account * (3600 + self.window - 1) / self.window
    }

    /// The most failed guesses from one address in any hour, across accounts.
    pub fn max_guesses_per_ip_per_hour(&self) -> i64 {
        self.max_per_ip * (3600 + self.window - 1) / self.window
    }
}

/// The three counter keys of an attempt: account, address, account at address.
pub fn keys(username_key: &str, ip: &str) -> [String; 3] {
    [
        token_hash(&format!("account:{username_key}")),
        token_hash(&format!("ip:{ip}")),
        token_hash(&format!("pair:{ip}|{username_key}")),
    ]
}

/// `Err(seconds)` when the attempt must wait that long before it is even checked.
pub fn check(
    p: &Policy,
    now: i64,
    account: Option<Counter>,
    ip: Option<Counter>,
    pair: Option<Counter>,
) -> Result<(), i64> {
    let live = |c: &Counter| c.window_start > now - p.window;
    let window_left = |c: &Counter| (c.window_start + p.window - now).max(1);
    if let Some(c) = account.filter(live) {
        if c.failures >= p.max_per_account {
            return Err(window_left(&c));
        }
    }
    if let Some(c) = ip.filter(live) {
        if c.failures >= p.max_per_ip {
            return Err(window_left(&c));
        }
    }
    if let Some(c) = pair.filter(live) {
        if c.failures >= p.free_per_pair {
            let exp = (c.failures - p.free_per_pair).min(20) as u32;
            let delay = (1i64 << exp).min(p.max_delay);
            let ready = c.last_failure + delay;
            if now < ready {
                return Err(ready - now);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy { window: 900, max_per_account: 10, max_per_ip: 100, free_per_pair: 3, max_delay: 60 };

    fn c(failures: i64, window_start: i64, last_failure: i64) -> Option<Counter> {
        Some(Counter { failures, window_start, last_failure })
    }

    #[test]
    fn free_failures_then_doubling_delays() {
        assert_eq!(check(&P, 100, None, None, c(2, 90, 99)), Ok(()));
        assert_eq!(check(&P, 100, None, None, c(3, 90, 100)), Err(1));
        assert_eq!(check(&P, 101, None, None, c(3, 90, 100)), Ok(()));
        assert_eq!(check(&P, 100, None, None, c(5, 90, 100)), Err(4));
        assert_eq!(check(&P, 100, None, None, c(9, 90, 100)), Err(60), "capped");
    }

    #[test]
    fn account_lock_ends_with_the_window() {
        let acct = c(10, 0, 50);
        assert_eq!(check(&P, 100, acct, None, None), Err(800));
        assert_eq!(check(&P, 900, acct, None, None), Ok(()), "the right password works again after the window");
        assert_eq!(check(&P, 100, c(9, 0, 50), None, None), Ok(()));
        assert_eq!(check(&P, 100, None, c(100, 0, 99), None), Err(800));
    }

    #[test]
    fn published_figures() {
        // 9 at the very end of one window, then 4 full windows of 10.
        assert_eq!(P.max_guesses_per_account_per_hour(), 49);
        assert_eq!(P.max_guesses_per_ip_per_hour(), 499);
    }
}
