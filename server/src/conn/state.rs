//! The connection state machine: INIT → OPEN ⟷ DRAINING → CLOSING → CLOSED.
//!
//! One type, one transition function. Every state change of a connection goes
//! through [`ConnState::check`], so an illegal change (a second close, a HELLO
//! after close) is refused instead of silently happening.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnState {
    /// Accepted; waiting for HELLO. Only HELLO is served.
    Init = 0,
    /// HELLO done; serving requests and deliveries.
    Open = 1,
    /// Open, but the outbound queue is past its high watermark.
    Draining = 2,
    /// Ending: no more requests are served; what is queued is being flushed.
    Closing = 3,
    /// Gone: out of every room, both threads finished. Reached exactly once.
    Closed = 4,
}

impl ConnState {
    pub const ALL: [ConnState; 5] = [
        ConnState::Init,
        ConnState::Open,
        ConnState::Draining,
        ConnState::Closing,
        ConnState::Closed,
    ];

    const fn from_u8(value: u8) -> ConnState {
        match value {
            0 => ConnState::Init,
            1 => ConnState::Open,
            2 => ConnState::Draining,
            3 => ConnState::Closing,
            _ => ConnState::Closed,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            ConnState::Init => "INIT",
            ConnState::Open => "OPEN",
            ConnState::Draining => "DRAINING",
            ConnState::Closing => "CLOSING",
            ConnState::Closed => "CLOSED",
        }
    }

    /// Whether `self → to` is a legal transition.
    pub const fn can_become(self, to: ConnState) -> bool {
        use ConnState::*;
        matches!(
            (self, to),
            (Init, Open)
                | (Init, Closing)
                | (Open, Draining)
                | (Draining, Open)
                | (Open, Closing)
                | (Draining, Closing)
                | (Closing, Closed)
        )
    }

    /// `to` if `self → to` is legal.
    pub fn check(self, to: ConnState) -> Result<ConnState, IllegalTransition> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A transition the state machine refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IllegalTransition {
    pub from: ConnState,
    pub to: ConnState,
}

impl fmt::Display for IllegalTransition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "illegal connection state transition {} → {}",
            self.from, self.to
        )
    }
}

impl std::error::Error for IllegalTransition {}

/// A connection's state, shared by its reader, its writer and broadcasters.
#[derive(Debug)]
pub struct StateCell(AtomicU8);

impl Default for StateCell {
    fn default() -> Self {
        StateCell(AtomicU8::new(ConnState::Init as u8))
    }
}

impl StateCell {
    pub fn get(&self) -> ConnState {
        ConnState::from_u8(self.0.load(Ordering::Acquire))
    }

    /// Moves to `to` if that is legal from the current state; atomic, so of
    /// two threads racing to close, exactly one wins.
    pub fn advance(&self, to: ConnState) -> Result<ConnState, IllegalTransition> {
        let mut current = self.0.load(Ordering::Acquire);
        loop {
            let from = ConnState::from_u8(current);
            from.check(to)?;
            match self
                .0
                .compare_exchange(current, to as u8, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(from),
                Err(actual) => current = actual,
            }
        }
    }

    /// Moves `from → to` only if the state is `from` now.
    pub fn advance_from(&self, from: ConnState, to: ConnState) -> bool {
        from.can_become(to)
            && self
                .0
                .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_documented_transitions_are_legal() {
        use ConnState::*;
        let legal = [
            (Init, Open),
            (Init, Closing),
            (Open, Draining),
            (Draining, Open),
            (Open, Closing),
            (Draining, Closing),
            (Closing, Closed),
        ];
        for from in ConnState::ALL {
            for to in ConnState::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(from.can_become(to), expected, "{from} → {to}");
                assert_eq!(from.check(to).is_ok(), expected, "{from} → {to}");
            }
        }
    }

    #[test]
    fn closing_happens_once_even_when_raced() {
        let cell = std::sync::Arc::new(StateCell::default());
        cell.advance(ConnState::Open).unwrap();
        let winners: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| cell.advance(ConnState::Closing).is_ok() as usize))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(winners, 1);
        assert!(cell.advance(ConnState::Closed).is_ok());
        assert!(cell.advance(ConnState::Closed).is_err());
        assert!(cell.advance(ConnState::Open).is_err());
    }

    #[test]
    fn draining_flips_only_from_the_expected_state() {
        let cell = StateCell::default();
        assert!(!cell.advance_from(ConnState::Open, ConnState::Draining));
        cell.advance(ConnState::Open).unwrap();
        assert!(cell.advance_from(ConnState::Open, ConnState::Draining));
        assert!(cell.advance_from(ConnState::Draining, ConnState::Open));
        assert_eq!(cell.get(), ConnState::Open);
    }
}
