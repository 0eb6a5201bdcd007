//! When an answer ends: its usage counted, logged and charged to the caller's budget — at once
//! when the store answers at once, else in the background; and the body wrapper that meters an
//! answer as it passes.

use super::estimate::Estimate;
use super::meter::Meter;
use super::tokens::TokenCounters;
use super::usage::Usage;
use crate::limits::Admissions;
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What happens when an answer ends: the labels and log fields of the request, the admission
/// to settle.
pub(crate) struct Settle {
    pub(crate) admissions: Admissions,
    pub(crate) estimate: Estimate,
    pub(crate) labels: TokenCounters,
    /// The access line's fields from the answer's head (`None` when access lines are off).
    pub(crate) log: Option<crate::logging::access::Fields>,
    pub(crate) started: std::time::Instant,
    /// The request's server span: gets the usage, and ends with the answer.
    pub(crate) trace: crate::telemetry::trace::RequestSpan,
}

pub(super) type Charging = Pin<Box<dyn Future<Output = ()> + Send>>;

impl Settle {
    /// Counts, logs and returns the charge of an answer that ended (`ended`) or broke off.
    fn settle(self, meter: &Meter, ended: bool) -> Option<Charging> {
        let (result, seen_completion) = meter.result(ended);
        let usage = match result {
            Ok(u) => u,
            Err(reason) => {
                metrics::counter!("entra_proxy_usage_estimated_total", "reason" => reason.name())
                    .increment(1);
                let prompt = self.estimate.tokens();
                Usage {
                    prompt,
                    completion: seen_completion,
                    total: prompt.saturating_add(seen_completion),
                    cached: None,
                    reasoning: None,
                }
            }
        };
        let estimated = result.is_err();
        self.trace.usage(usage.prompt, usage.completion, estimated);
        if self.trace.is_recording()
            && let Some(model) = meter.response_model()
        {
            self.trace.response_model(&model);
        }
        self.labels.count(&usage);
        if let Some(mut line) = self.log {
            line.number("took_ms", self.started.elapsed().as_millis() as u64)
                .number("prompt_tokens", usage.prompt)
                .number("completion_tokens", usage.completion)
                .number("total_tokens", usage.total);
            if let Some(cached) = usage.cached {
                line.number("cached_tokens", cached);
            }
            if let Some(reasoning) = usage.reasoning {
                line.number("reasoning_tokens", reasoning);
            }
            line.flag("usage_estimated", estimated)
                .flag("ended", ended)
                .write("proxied");
        }
        let charge = self.admissions.settle(usage.total).pending()?;
        Some(Box::pin(charge))
    }
}

/// An answer's body, metered as it passes. At its end the usage is counted, logged and charged
/// (the client sees the end once the charge is recorded); when the stream breaks off or the
/// client goes away, what was seen is charged in the background.
pub(crate) struct Metered<B: http_body::Body> {
    inner: B,
    meter: Meter,
    settle: Option<Settle>,
    charging: Option<Charging>,
    flushed: bool,
}

impl<B: http_body::Body> Metered<B> {
    pub(crate) fn new(inner: B, meter: Meter, settle: Settle) -> Metered<B> {
        Metered {
            inner,
            meter,
            settle: Some(settle),
            charging: None,
            flushed: false,
        }
    }

    fn settle(&mut self, ended: bool) -> Option<Charging> {
        self.settle.take()?.settle(&self.meter, ended)
    }
}

/// Runs a charge that waits for the store (Redis) now when it completes at once, else in the
/// background. A charge in memory is recorded before it would get here.
pub(super) fn charge_now_or_later(mut charge: Charging) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    if charge.as_mut().poll(&mut cx).is_pending()
        && let Ok(rt) = tokio::runtime::Handle::try_current()
    {
        rt.spawn(charge);
    }
}

impl<B: http_body::Body> Drop for Metered<B> {
    fn drop(&mut self) {
        // A body whose length is known may be dropped once its last byte was sent.
        let ended = self.inner.is_end_stream();
        if let Some(charge) = self.settle(ended) {
            charge_now_or_later(charge);
        }
    }
}

impl<B> http_body::Body for Metered<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            if let Some(charging) = this.charging.as_mut() {
                return match charging.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.charging = None;
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                };
            }
            if this.settle.is_none() {
                return match Pin::new(&mut this.inner).poll_frame(cx) {
                    // Settled at the last frame: only trailers or the end remain.
                    Poll::Ready(Some(Ok(frame))) if !frame.is_data() => {
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Pending => Poll::Pending,
                    _ => Poll::Ready(None),
                };
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let last = this.inner.is_end_stream();
                    let frame = match frame.into_data() {
                        Ok(data) => match this.meter.feed(&data) {
                            None => http_body::Frame::data(data),
                            Some(out) if out.is_empty() => continue,
                            Some(out) => http_body::Frame::data(out),
                        },
                        Err(frame) => frame,
                    };
                    // The client may not ask again after the last frame of a known length.
                    if last
                        && !this.meter.rewrites()
                        && let Some(charge) = this.settle(true)
                    {
                        charge_now_or_later(charge);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    if let Some(charge) = this.settle(false) {
                        charge_now_or_later(charge);
                    }
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    if !this.flushed {
                        this.flushed = true;
                        if let Meter::Sse(s) = &mut this.meter
                            && let Some(rest) = s.flush()
                        {
                            return Poll::Ready(Some(Ok(http_body::Frame::data(rest))));
                        }
                    }
                    match this.settle(true) {
                        Some(charge) => this.charging = Some(charge),
                        None => return Poll::Ready(None),
                    }
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.settle.is_none() && self.charging.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.meter.rewrites() {
            http_body::SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}
