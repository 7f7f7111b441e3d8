//! Holding a viewer at its target delay over hours. The video element plays by its own
//! clock (usually the audio device's), which runs slightly off the wall clock the
//! broadcaster cuts by: in a 30-minute soak here (`docs/benchmarks.md`), headless
//! Chromium's delay crept from 2.7 to 3.5 s in 20 minutes and stepped to 5.1 s by the
//! end, and nothing but the 6 s catch-up jump would have brought it back.
//! Like dash.js's live catch-up, the player nudges the playback rate — a few percent,
//! with the pitch kept — while the delay strays from the target, with hysteresis so it
//! does not flap.

/// Rate while more than `STRAY_MS` behind the target.
pub const CATCH_UP_RATE: f64 = 1.05;
/// Rate while more than `STRAY_MS` ahead of it (the buffer thinner than planned).
pub const FALL_BACK_RATE: f64 = 0.95;
/// How far from the target the delay may stray before the rate changes.
pub const STRAY_MS: f64 = 500.0;
/// How close to the target a nudge brings it before the rate is normal again.
pub const SETTLED_MS: f64 = 100.0;

/// The playback rate for a delay of `lag_ms` against `target_ms`, given the rate now (a
/// nudge in progress continues until settled).
pub fn live_sync_rate(lag_ms: f64, target_ms: f64, rate_now: f64) -> f64 {
    let off = lag_ms - target_ms;
    if rate_now > 1.0 {
        return if off > SETTLED_MS { CATCH_UP_RATE } else { 1.0 };
    }
    if rate_now < 1.0 {
        return if off < -SETTLED_MS {
            FALL_BACK_RATE
        } else {
            1.0
        };
    }
    if off > STRAY_MS {
        CATCH_UP_RATE
    } else if off < -STRAY_MS {
        FALL_BACK_RATE
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_straying_past_half_a_second_is_nudged_back_to_the_target() {
        assert_eq!(
            live_sync_rate(1_900.0, 1_500.0, 1.0),
            1.0,
            "within the stray"
        );
        assert_eq!(live_sync_rate(2_100.0, 1_500.0, 1.0), CATCH_UP_RATE);
        // Caught up most of the way: still nudging until settled.
        assert_eq!(
            live_sync_rate(1_650.0, 1_500.0, CATCH_UP_RATE),
            CATCH_UP_RATE
        );
        assert_eq!(live_sync_rate(1_590.0, 1_500.0, CATCH_UP_RATE), 1.0);
        assert_eq!(live_sync_rate(900.0, 1_500.0, 1.0), FALL_BACK_RATE);
        assert_eq!(
            live_sync_rate(1_350.0, 1_500.0, FALL_BACK_RATE),
            FALL_BACK_RATE
        );
        assert_eq!(live_sync_rate(1_450.0, 1_500.0, FALL_BACK_RATE), 1.0);
    }
}
