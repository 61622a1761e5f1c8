-- Scrape like Prometheus: keep-alive, gzip and the OpenMetrics Accept header on every request.
-- done() prints one line of key=value pairs (latencies in microseconds) for bench/loadgen.py.
wrk.method = "GET"
wrk.headers["Accept-Encoding"] = "gzip"
wrk.headers["Accept"] = "application/openmetrics-text;version=1.0.0,"
  .. "application/openmetrics-text;version=0.0.1;q=0.75,"
  .. "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
wrk.headers["User-Agent"] = "Prometheus/2.42.0"
wrk.headers["X-Prometheus-Scrape-Timeout-Seconds"] = "10"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d "
      .. "mean_us=%.1f connect_errors=%d read_errors=%d write_errors=%d status_errors=%d "
      .. "timeouts=%d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
