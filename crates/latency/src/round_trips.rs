//! How many network round trips a user-visible action costs, for [`crate::LatencyModel::predict_ms`].
//!
//! The model (DESIGN.md §7) is `processing + round_trips × RTT`. The constants below count the
//! round trips on the *critical path* between the user's device and the region serving their
//! data, under stated assumptions. Common to all of them:
//!
//! - DNS is not counted: the resolver sits near the user and answers from cache.
//! - Bodies fit in TCP's initial congestion window of 10 segments, about 14 KB (RFC 6928). A
//!   larger body in slow start costs about one more round trip per doubling of the window, so
//!   bulk transfers (photo uploads) take more than these counts; count them separately.
//! - Requests that HTTP/2 multiplexes into one flight (several GETs sent together) count once.
//! - No packet loss. Across the mainland-China border loss is common (see `data/README.md`), and
//!   every retransmission adds at least one RTT, so the model is optimistic for those routes.

/// One API request on an already open (warm) HTTP/2 or keep-alive HTTP/1.1 connection: the
/// request goes out, the response comes back. The advisor compares regions with this.
pub const REQUEST: u32 = 1;

/// One API request on a new HTTPS connection with TLS 1.3: the TCP handshake (1, RFC 9293 §3.5;
/// the ClientHello goes with the final ACK), the TLS 1.3 full handshake (1, RFC 8446 §2), then the
/// request (1). No TCP Fast Open, no 0-RTT resumption.
pub const COLD_REQUEST: u32 = 3;

/// As [`COLD_REQUEST`] with TLS 1.2, whose full handshake takes 2 round trips (RFC 5246 §7.3):
/// the common case for the 2014 clients of the reference scenario.
pub const COLD_REQUEST_TLS12: u32 = 4;

/// A page load served entirely from the region (no CDN), on a new TLS 1.3 connection: the HTML
/// ([`COLD_REQUEST`], 3), then the render-blocking CSS and scripts the HTML names, in one
/// multiplexed flight (1), then the first API call those scripts make for the page's data (1).
/// A CDN takes the static flight off the region's path; see the module notes for slow start.
pub const PAGE_LOAD: u32 = 5;

/// A sync of one collection on a warm connection, with domicile's API (DESIGN.md §9): list the
/// keys changed since the client's cursor (`GET …?after=K`, 1), fetch the changed records in one
/// multiplexed flight (1), then push the client's own changes as conditional `PUT`s with
/// `If-Match` (1). Blob bodies past the initial window add slow-start round trips.
pub const SYNC: u32 = 3;
