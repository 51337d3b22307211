//! Warnings that may repeat thousands of times a second under a flood
//! (refused connections, failed accepts or spawns): the first one is logged,
//! the rest are counted and summarised once per interval. Pure: time is a
//! parameter. The one quiet-log type every flood goes through.

use std::time::{Duration, Instant};

/// At most one line per this interval for each kind of repeated warning.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// One kind of repeated warning: logged once per `LOG_INTERVAL`, the rest
/// counted for the summary.
#[derive(Debug, Clone, Default)]
pub struct QuietLog {
    last_logged: Option<Instant>,
    silenced: u64,
}

impl QuietLog {
    /// Whether to log this occurrence now; otherwise it is counted.
    pub fn should_log(&mut self, now: Instant) -> bool {
        match self.last_logged {
            Some(last) if now.saturating_duration_since(last) < LOG_INTERVAL => {
                self.silenced += 1;
                false
            }
            _ => {
                self.last_logged = Some(now);
                true
            }
        }
    }

    /// When a summary of silenced occurrences is due.
    pub fn summary_due(&self) -> Option<Instant> {
        match self.last_logged {
            Some(last) if self.silenced > 0 => Some(last + LOG_INTERVAL),
            _ => None,
        }
    }

    /// How many were silenced, if their summary is due now (and resets).
    pub fn take_summary(&mut self, now: Instant) -> Option<u64> {
        match self.summary_due() {
            Some(due) if due <= now => {
                let silenced = std::mem::take(&mut self.silenced);
                self.last_logged = Some(now);
                Some(silenced)
            }
            _ => None,
        }
    }

    /// How many were silenced since the last line, due or not (and
    /// resets): the last word when what was warned about goes away
    /// before its summary is due.
    pub fn take_silenced(&mut self) -> u64 {
        std::mem::take(&mut self.silenced)
    }
    /// When it last logged and how many it silenced since: what an
    /// upgrade carries (`upgrade/`), so that a summary due is not lost.
    pub fn carried(&self) -> (Option<Instant>, u64) {
        (self.last_logged, self.silenced)
    }

    pub fn restored(last_logged: Option<Instant>, silenced: u64) -> QuietLog {
        QuietLog {
            last_logged,
            silenced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn refusals_are_logged_once_per_interval_then_summarised() {
        let t0 = Instant::now();
        let mut log = QuietLog::default();
        assert!(log.should_log(t0));
        assert_eq!(log.summary_due(), None);
        for i in 0..1000 {
            assert!(!log.should_log(t0 + ms(i % 900)));
        }
        assert_eq!(log.summary_due(), Some(t0 + LOG_INTERVAL));
        assert_eq!(log.take_summary(t0 + ms(500)), None, "not yet");
        assert_eq!(log.take_summary(t0 + LOG_INTERVAL), Some(1000));
        assert_eq!(log.summary_due(), None);
        assert!(!log.should_log(t0 + LOG_INTERVAL + ms(1)));
        assert!(log.should_log(t0 + LOG_INTERVAL * 2));
    }

    #[test]
    fn what_was_silenced_can_be_taken_before_its_summary_is_due() {
        let t0 = Instant::now();
        let mut log = QuietLog::default();
        assert_eq!(log.take_silenced(), 0);
        assert!(log.should_log(t0));
        assert!(!log.should_log(t0 + ms(1)));
        assert!(!log.should_log(t0 + ms(2)));
        assert_eq!(log.take_silenced(), 2);
        assert_eq!(log.summary_due(), None, "nothing left to summarise");
        assert_eq!(log.take_silenced(), 0);
    }

    #[test]
    fn a_restored_log_still_owes_its_summary() {
        let t0 = Instant::now();
        let mut log = QuietLog::default();
        assert!(log.should_log(t0));
        assert!(!log.should_log(t0 + ms(1)));
        let (last, silenced) = log.carried();
        let mut restored = QuietLog::restored(last, silenced);
        assert_eq!(restored.summary_due(), Some(t0 + LOG_INTERVAL));
        assert!(
            !restored.should_log(t0 + ms(2)),
            "still within the interval"
        );
        assert_eq!(restored.take_summary(t0 + LOG_INTERVAL), Some(2));
    }
}
