//! Why the server refuses a peer, each reason with its wire consequence.
//!
//! Every refusal is a type with a `reply()` that says what the peer hears (the reply, if any,
//! then the close code), so that each code in the README's table of closes is decided here or in
//! [`FormatError::reply`](crate::FormatError::reply) and
//! [`TokenRejected::reply`](crate::TokenRejected::reply), never by a host:
//!
//! | refusal | reply | close |
//! |---|---|---|
//! | [`FormatError`](crate::FormatError) | 401 "Wrong message format" | 1003 |
//! | [`TokenRejected`](crate::TokenRejected) | 401 "Invalid device token" | 1008 |
//! | [`WrongCredentials`] | 401 "Invalid credentials" | 1008 |
//! | [`StoreFailed`] (or a store not done by the register timeout) | 500 | 1011 |
//! | [`FrameError`] | none | 1002, 1007, 1009 |
//!
//! The closes that are no refusal are the session's own rules: 1000 at a timeout or when
//! superseded, 1001 at shutdown, 1013 when evicted (see [`Session`](crate::Session)).

use core::fmt;

use crate::message::{CloseCode, Reply};

/// The host could not record the device's binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreFailed;

impl StoreFailed {
    /// The wire consequence: 500 "Cannot record the device binding", then close 1011.
    pub fn reply(&self) -> (Reply, CloseCode) {
        (Reply::CannotStoreBinding, CloseCode::INTERNAL_ERROR)
    }
}

/// An actuation's credentials do not match the configured pair, or none are configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrongCredentials;

impl WrongCredentials {
    /// The wire consequence: 401 "Invalid credentials", then close 1008.
    pub fn reply(&self) -> (Reply, CloseCode) {
        (Reply::InvalidCredentials, CloseCode::POLICY_VIOLATION)
    }
}

/// A frame the WebSocket layer refused before it became a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameError {
    /// The peer broke the WebSocket protocol (masking, opcodes, fragmentation, control frames).
    Protocol,
    /// A text message that is not valid UTF-8.
    InvalidUtf8,
    /// A message or frame over the size limit.
    TooBig,
}

impl FrameError {
    /// The wire consequence: no reply (the peer's framing is not to be trusted with one), then
    /// the RFC 6455 close code for the fault.
    pub fn reply(&self) -> (Option<Reply>, CloseCode) {
        let code = match self {
            FrameError::Protocol => CloseCode::PROTOCOL_ERROR,
            FrameError::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            FrameError::TooBig => CloseCode::MESSAGE_TOO_BIG,
        };
        (None, code)
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::Protocol => "WebSocket protocol error",
            FrameError::InvalidUtf8 => "text message is not UTF-8",
            FrameError::TooBig => "message over the size limit",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::{String, ToString};

    #[test]
    fn store_failure_is_answered_500_then_closed_1011() {
        assert_eq!(StoreFailed.reply(), (Reply::CannotStoreBinding, CloseCode(1011)));
    }

    #[test]
    fn wrong_credentials_are_answered_401_then_closed_1008() {
        assert_eq!(WrongCredentials.reply(), (Reply::InvalidCredentials, CloseCode(1008)));
    }

    #[test]
    fn frame_errors_close_with_their_rfc_code_and_no_reply() {
        for (error, code) in [(FrameError::Protocol, 1002), (FrameError::InvalidUtf8, 1007), (FrameError::TooBig, 1009)]
        {
            assert_eq!(error.reply(), (None, CloseCode(code)), "{error}");
        }
    }

    #[test]
    fn every_frame_error_reads_differently_in_a_log() {
        let texts: [String; 3] =
            [FrameError::Protocol, FrameError::InvalidUtf8, FrameError::TooBig].map(|e| e.to_string());
        assert_eq!(texts[2], "message over the size limit");
        for (i, text) in texts.iter().enumerate() {
            assert!(!text.is_empty());
            assert!(!texts[..i].contains(text), "{text} twice");
        }
    }
}
