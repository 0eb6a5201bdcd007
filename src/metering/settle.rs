//! When an answer ends: its usage counted, priced, logged and settled against the caller's
//! reservation (in memory at once, for Redis queued: the client never waits for it); and the
//! body wrapper that meters an answer as it passes.

use super::estimate::Estimate;
use super::meter::Meter;
use super::tokens::TokenCounters;
use super::usage::Usage;
use crate::limits::{Admissions, Amounts, Tariff};
use bytes::Bytes;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What an answer's usage costs at its deployment's price, and the counter it adds to.
pub(crate) struct Pricing {
    pub(crate) tariff: Tariff,
    /// `entra_proxy_spend_total` of the caller and the model.
    pub(crate) spent: metrics::Counter,
    /// The config's currency, for the access line.
    pub(crate) currency: std::sync::Arc<str>,
}

impl Pricing {
    /// What `usage` costs, counted in `entra_proxy_spend_total`.
    pub(crate) fn spend(&self, usage: &Usage) -> u64 {
        let micros = self
            .tariff
            .cost(usage.prompt, usage.cached.unwrap_or(0), usage.completion);
        self.spent.increment(micros);
        micros
    }
}

/// What `usage` holds of a budget: its tokens, and what they cost (nothing unpriced).
pub(crate) fn amounts(usage: &Usage, pricing: Option<&Pricing>) -> Amounts {
    Amounts {
        tokens: usage.total,
        micros: pricing.map_or(0, |p| p.spend(usage)),
    }
}

/// What happens when an answer ends: the labels and log fields of the request, the admission
/// to settle.
pub(crate) struct Settle {
    pub(crate) admissions: Admissions,
    pub(crate) estimate: Estimate,
    pub(crate) labels: TokenCounters,
    /// The answering deployment's price, when it has one.
    pub(crate) pricing: Option<Pricing>,
    /// The access line's fields from the answer's head (`None` when access lines are off).
    pub(crate) log: Option<crate::logging::access::Fields>,
    pub(crate) started: std::time::Instant,
    /// The request's server span: gets the usage, and ends with the answer.
    pub(crate) trace: crate::telemetry::trace::RequestSpan,
}

impl Settle {
    /// Counts, prices, logs and settles an answer that ended (`ended`) or broke off.
    fn settle(self, meter: &Meter, ended: bool) {
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
        let spent = amounts(&usage, self.pricing.as_ref());
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
            if let Some(p) = &self.pricing {
                line.display("spend", crate::limits::Money(spent.micros))
                    .text("currency", &p.currency);
            }
            line.flag("usage_estimated", estimated)
                .flag("ended", ended)
                .write("proxied");
        }
        self.admissions.settle(spent);
    }
}

/// An answer's body, metered as it passes. At its end the usage is counted, logged and settled;
/// when the stream breaks off or the client goes away, what was seen.
pub(crate) struct Metered<B: http_body::Body> {
    inner: B,
    meter: Meter,
    settle: Option<Settle>,
    flushed: bool,
}

impl<B: http_body::Body> Metered<B> {
    pub(crate) fn new(inner: B, meter: Meter, settle: Settle) -> Metered<B> {
        Metered {
            inner,
            meter,
            settle: Some(settle),
            flushed: false,
        }
    }

    fn settle(&mut self, ended: bool) {
        if let Some(settle) = self.settle.take() {
            settle.settle(&self.meter, ended);
        }
    }
}

impl<B: http_body::Body> Drop for Metered<B> {
    fn drop(&mut self) {
        // A body whose length is known may be dropped once its last byte was sent.
        let ended = self.inner.is_end_stream();
        self.settle(ended);
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
                    if last && !this.meter.rewrites() {
                        this.settle(true);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.settle(false);
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
                    this.settle(true);
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.settle.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.meter.rewrites() {
            http_body::SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}
