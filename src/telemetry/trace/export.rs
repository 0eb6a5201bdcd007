//! Finished spans on their way to the collector: a bounded queue that a request only ever
//! `try_send`s into, and one background thread that batches the queue and posts each batch
//! with the OTLP/HTTP exporter. A full queue or a failed export drops spans and counts them
//! (`entra_proxy_trace_spans_dropped_total`); it never makes a request wait or memory grow.

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _, SpanProcessor};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Spans waiting for export, at most.
pub(super) const QUEUE_CAPACITY: usize = 2048;
/// Spans in one export request, at most.
pub(super) const MAX_BATCH: usize = 512;
/// How long a span waits for a batch to fill before the batch goes anyway.
pub(super) const BATCH_DELAY: Duration = Duration::from_secs(1);
/// How long one export may take before its spans count as dropped.
pub(super) const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The span processor the tracer provider calls: hands each finished span to the queue.
#[derive(Debug)]
pub(super) struct Queue {
    spans: mpsc::Sender<SpanData>,
    full: metrics::Counter,
}

/// Asks the export thread to send everything queued, then answers.
type Flush = oneshot::Sender<()>;

/// The handle that flushes the queue (at shutdown) and ends the export thread when dropped.
#[derive(Debug)]
pub(super) struct Exporting {
    flush: mpsc::UnboundedSender<Flush>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.spans.try_send(span).is_err() {
            self.full.increment(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Starts the export thread for `exporter`; returns the processor to install and the handle
/// that flushes.
pub(super) fn start(
    exporter: opentelemetry_otlp::SpanExporter,
) -> Result<(Queue, Exporting), String> {
    let (spans, queued) = mpsc::channel(QUEUE_CAPACITY);
    let (flush, flushes) = mpsc::unbounded_channel();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the trace export thread: {e}"))?;
    std::thread::Builder::new()
        .name("entra-proxy-traces".into())
        .spawn(move || runtime.block_on(export_loop(exporter, queued, flushes)))
        .map_err(|e| format!("cannot start the trace export thread: {e}"))?;
    let queue = Queue {
        spans,
        full: dropped("queue_full"),
    };
    Ok((queue, Exporting { flush }))
}

impl Exporting {
    /// Sends what is queued now; waits at most `timeout`.
    pub(super) async fn flush(&self, timeout: Duration) {
        let (done, finished) = oneshot::channel();
        if self.flush.send(done).is_ok() {
            let _ = tokio::time::timeout(timeout, finished).await;
        }
    }
}

fn dropped(reason: &'static str) -> metrics::Counter {
    metrics::counter!("entra_proxy_trace_spans_dropped_total", "reason" => reason)
}

/// Batches queued spans and exports them: when a batch is full, when the oldest span in it has
/// waited [`BATCH_DELAY`], and when asked to flush. Ends when the flush handle is dropped.
async fn export_loop(
    exporter: opentelemetry_otlp::SpanExporter,
    mut queued: mpsc::Receiver<SpanData>,
    mut flushes: mpsc::UnboundedReceiver<Flush>,
) {
    let failed = dropped("export_failed");
    let exported = metrics::counter!("entra_proxy_trace_spans_exported_total");
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    let send = |batch: Vec<SpanData>| {
        let n = batch.len() as u64;
        let failed = failed.clone();
        let exported = exported.clone();
        let exporter = &exporter;
        async move {
            if n == 0 {
                return;
            }
            match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(batch)).await {
                Ok(Ok(())) => exported.increment(n),
                Ok(Err(e)) => {
                    failed.increment(n);
                    tracing::debug!(error = %e, spans = n, "trace export failed; spans dropped");
                }
                Err(_) => {
                    failed.increment(n);
                    tracing::debug!(spans = n, "trace export timed out; spans dropped");
                }
            }
        }
    };
    loop {
        let deadline = tokio::time::sleep(BATCH_DELAY);
        tokio::pin!(deadline);
        // Fill one batch.
        loop {
            tokio::select! {
                span = queued.recv(), if batch.len() < MAX_BATCH => match span {
                    Some(s) => {
                        batch.push(s);
                        if batch.len() >= MAX_BATCH {
                            break;
                        }
                    }
                    None => {
                        send(std::mem::take(&mut batch)).await;
                        return;
                    }
                },
                () = &mut deadline => break,
                flush = flushes.recv() => {
                    let Some(done) = flush else {
                        // The proxy is gone: what is queued goes out, then the thread ends.
                        while let Ok(s) = queued.try_recv() {
                            batch.push(s);
                        }
                        for chunk in batch.chunks(MAX_BATCH).map(<[SpanData]>::to_vec) {
                            send(chunk).await;
                        }
                        return;
                    };
                    while let Ok(s) = queued.try_recv() {
                        batch.push(s);
                    }
                    for chunk in std::mem::take(&mut batch).chunks(MAX_BATCH).map(<[SpanData]>::to_vec) {
                        send(chunk).await;
                    }
                    let _ = done.send(());
                }
            }
        }
        send(std::mem::take(&mut batch)).await;
    }
}

/// The exporter's HTTP client: the proxy's own reqwest, with a timeout, no redirects.
#[derive(Debug)]
pub(super) struct Client(reqwest::Client);

impl Client {
    pub(super) fn new() -> Result<Client, String> {
        reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map(Client)
            .map_err(|e| format!("cannot build the trace exporter's HTTP client: {e}"))
    }
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request.map(reqwest::Body::from))?;
        let response = self.0.execute(request).await?;
        let mut out = Response::builder().status(response.status());
        for (name, value) in response.headers() {
            out = out.header(name, value);
        }
        let body = response.bytes().await?;
        Ok(out.body(body)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let full = Arc::new(AtomicU64::new(0));
        let (spans, mut queued) = mpsc::channel(2);
        let queue = Queue {
            spans,
            full: metrics::Counter::from_arc(full.clone()),
        };
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_span_processor(queue)
            .build();
        let tracer = provider.tracer("test");
        for i in 0..5 {
            drop(tracer.start(format!("span {i}")));
        }
        assert_eq!(full.load(Ordering::Relaxed), 3);
        assert_eq!(queued.try_recv().unwrap().name, "span 0");
        assert_eq!(queued.try_recv().unwrap().name, "span 1");
        assert!(queued.try_recv().is_err(), "the queue stays bounded");
    }
}
