// Package tracing turns kindling's invocation records into OpenTelemetry
// traces: one trace per invocation, with one span per phase.
//
// A Tracer is created once per daemon from a Config that names the exporter:
//
//	"none"   tracing is off (the default); the Tracer costs nothing
//	"stdout" spans are written as JSON, one object per span, to Config.Writer
//	"otlp"   spans are sent to an OpenTelemetry collector over OTLP/HTTP
//	         (protobuf), at Config.Endpoint + "/v1/traces"
//	"zipkin" spans are sent to a Zipkin server as its v2 JSON span list
//
// The invocation path is not instrumented. Instead RecordInvocation is called
// with the finished api.Invocation and rebuilds its trace after the fact:
//
//	invoke <function>        SpanKind server, StartedAt..EndedAt
//	├── queue                SpanKind internal, one span per phase,
//	├── load                 laid end to end from StartedAt with each
//	├── compile              phase's Duration, in the recorded order
//	└── ...
//
// The root span carries kindling.function, kindling.invocation_id,
// kindling.cold_start, kindling.status and kindling.exit_code, plus
// http.response.status_code when the invocation answered over HTTP. A failed
// invocation sets the span status to Error with the error message, and
// error.type to the error kind (trap, exit, timeout, ...). A phase span
// carries kindling.phase.detail when its phase has a detail, for example
// "cache=disk" for compile.
//
// An incoming W3C trace context (the traceparent and tracestate headers) is
// read with Extract; the context it returns, given to RecordInvocation, makes
// the invocation's root span a child of the caller's span. Sampling follows
// the caller's decision and samples everything otherwise.
//
// A nil *Tracer is valid and disabled, so callers need no nil checks.
package tracing

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/exporters/zipkin"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/kindling-dev/kindling/api"
	"github.com/kindling-dev/kindling/errdefs"
	"github.com/kindling-dev/kindling/phase"
)

// Exporter names accepted in Config.Exporter.
const (
	ExporterNone   = "none"
	ExporterStdout = "stdout"
	ExporterOTLP   = "otlp"
	ExporterZipkin = "zipkin"
)

// Defaults applied to a Config that leaves a field empty.
const (
	DefaultOTLPEndpoint   = "http://127.0.0.1:4318"
	DefaultZipkinEndpoint = "http://127.0.0.1:9411/api/v2/spans"
	DefaultServiceName    = "kindling"
)

// otlpTracesPath is the OTLP/HTTP path for traces, appended to a base URL.
const otlpTracesPath = "/v1/traces"

// instrumentationName names this package as the instrumentation scope.
const instrumentationName = "github.com/kindling-dev/kindling/tracing"

// Attribute keys set on the spans.
const (
	keyFunction     = attribute.Key("kindling.function")
	keyInvocationID = attribute.Key("kindling.invocation_id")
	keyColdStart    = attribute.Key("kindling.cold_start")
	keyStatus       = attribute.Key("kindling.status")
	keyExitCode     = attribute.Key("kindling.exit_code")
	keyPhaseDetail  = attribute.Key("kindling.phase.detail")
)

// Config selects and configures the exporter.
type Config struct {
	// Exporter is one of "none" (the default), "stdout", "otlp" or "zipkin".
	Exporter string
	// Endpoint is, for otlp, the collector's base URL (default
	// http://127.0.0.1:4318; "/v1/traces" is appended unless the path
	// already ends with it) and, for zipkin, the full span endpoint URL
	// (default http://127.0.0.1:9411/api/v2/spans). It takes precedence
	// over the OTEL_EXPORTER_OTLP_*ENDPOINT and OTEL_EXPORTER_ZIPKIN_ENDPOINT
	// environment variables. Other exporters ignore it.
	Endpoint string
	// ServiceName is the service.name resource attribute (default "kindling").
	ServiceName string
	// Writer receives the stdout exporter's output (default os.Stdout).
	Writer io.Writer
}

// Tracer records invocations as traces. It is safe for concurrent use. A nil
// *Tracer, or one created with the "none" exporter, is disabled: every method
// returns at once.
type Tracer struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
}

// New creates a Tracer for cfg. The exporters connect lazily: New fails only
// for an unknown exporter or a malformed endpoint.
func New(ctx context.Context, cfg Config) (*Tracer, error) {
	name := strings.ToLower(strings.TrimSpace(cfg.Exporter))
	var processor sdktrace.TracerProviderOption
	switch name {
	case "", ExporterNone:
		return &Tracer{}, nil
	case ExporterStdout:
		w := cfg.Writer
		if w == nil {
			w = os.Stdout
		}
		exp, err := stdouttrace.New(stdouttrace.WithWriter(w))
		if err != nil {
			return nil, fmt.Errorf("tracing: stdout exporter: %w", err)
		}
		// Synchronous, so every span is written by the time its
		// invocation is recorded.
		processor = sdktrace.WithSyncer(exp)
	case ExporterOTLP:
		endpoint, err := otlpTracesURL(cfg.Endpoint)
		if err != nil {
			return nil, err
		}
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
		if err != nil {
			return nil, fmt.Errorf("tracing: otlp exporter for %s: %w", endpoint, err)
		}
		processor = sdktrace.WithBatcher(exp)
	case ExporterZipkin:
		endpoint := cfg.Endpoint
		if endpoint == "" {
			endpoint = DefaultZipkinEndpoint
		}
		if _, err := httpURL(endpoint); err != nil {
			return nil, fmt.Errorf("tracing: zipkin endpoint: %w", err)
		}
		exp, err := zipkin.New(endpoint)
		if err != nil {
			return nil, fmt.Errorf("tracing: zipkin exporter for %s: %w", endpoint, err)
		}
		processor = sdktrace.WithBatcher(exp)
	default:
		return nil, fmt.Errorf("tracing: unknown exporter %q (valid: %s, %s, %s, %s): %w",
			cfg.Exporter, ExporterNone, ExporterStdout, ExporterOTLP, ExporterZipkin, errdefs.ErrInvalidArgument)
	}
	return newTracer(cfg.ServiceName, processor), nil
}

// newTracer returns an enabled Tracer whose provider uses processor.
func newTracer(serviceName string, processor sdktrace.TracerProviderOption) *Tracer {
	if serviceName == "" {
		serviceName = DefaultServiceName
	}
	res := resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(serviceName),
		semconv.TelemetrySDKName("opentelemetry"),
		semconv.TelemetrySDKLanguageGo,
	)
	provider := sdktrace.NewTracerProvider(
		processor,
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
	)
	return &Tracer{provider: provider, tracer: provider.Tracer(instrumentationName)}
}

// otlpTracesURL returns the OTLP/HTTP traces URL for the base URL endpoint.
func otlpTracesURL(endpoint string) (string, error) {
	if endpoint == "" {
		endpoint = DefaultOTLPEndpoint
	}
	u, err := httpURL(endpoint)
	if err != nil {
		return "", fmt.Errorf("tracing: otlp endpoint: %w", err)
	}
	if !strings.HasSuffix(strings.TrimSuffix(u.Path, "/"), otlpTracesPath) {
		u = u.JoinPath(otlpTracesPath)
	}
	return u.String(), nil
}

// httpURL parses an absolute http or https URL.
func httpURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an http(s)://host[:port] URL: %w", s, errdefs.ErrInvalidArgument)
	}
	return u, nil
}

// Enabled reports whether t exports spans.
func (t *Tracer) Enabled() bool { return t != nil && t.tracer != nil }

// Extract returns ctx carrying the W3C trace context (traceparent and
// tracestate) found in h, if any. A disabled Tracer returns ctx unchanged.
func (t *Tracer) Extract(ctx context.Context, h http.Header) context.Context {
	if !t.Enabled() {
		return ctx
	}
	return propagation.TraceContext{}.Extract(ctx, propagation.HeaderCarrier(h))
}

// RecordInvocation records the finished invocation inv as a trace: a root
// span for the invocation and a child span per phase (see the package
// documentation). The root span is a child of the span in ctx, if any, for
// example a remote parent from Extract. An invocation without a start time is
// not recorded. Phase spans are clipped to the invocation's end.
func (t *Tracer) RecordInvocation(ctx context.Context, inv api.Invocation) {
	// Small enough to be inlined: a disabled Tracer costs a nil check at
	// the call site.
	if t == nil || t.tracer == nil {
		return
	}
	t.record(ctx, &inv)
}

// record implements RecordInvocation for an enabled Tracer.
func (t *Tracer) record(ctx context.Context, inv *api.Invocation) {
	if inv.StartedAt.IsZero() {
		return
	}
	start := inv.StartedAt
	end := inv.EndedAt
	if end.IsZero() {
		end = start.Add(max(inv.DurationNs, phase.Total(inv.Phases)))
	}
	if end.Before(start) {
		end = start
	}

	attrs := make([]attribute.KeyValue, 0, 7)
	attrs = append(attrs,
		keyFunction.String(inv.Function),
		keyInvocationID.String(inv.ID),
		keyColdStart.Bool(inv.Cold),
		keyStatus.String(inv.Status),
		keyExitCode.Int(inv.ExitCode),
	)
	if inv.HTTPStatus != 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(inv.HTTPStatus))
	}
	if inv.Error != nil {
		attrs = append(attrs, semconv.ErrorTypeKey.String(inv.Error.Kind))
	}
	ctx, root := t.tracer.Start(ctx, "invoke "+inv.Function,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(start),
		trace.WithAttributes(attrs...),
	)
	switch {
	case inv.Error != nil:
		root.SetStatus(codes.Error, inv.Error.Message)
	case inv.Status == api.StatusFailed:
		root.SetStatus(codes.Error, inv.Status)
	}

	cursor := start
	for _, p := range inv.Phases {
		pStart := cursor
		pEnd := pStart.Add(max(p.Duration, 0))
		if pEnd.After(end) {
			pEnd = end
		}
		opts := []trace.SpanStartOption{trace.WithTimestamp(pStart)}
		if p.Detail != "" {
			opts = append(opts, trace.WithAttributes(keyPhaseDetail.String(p.Detail)))
		}
		_, span := t.tracer.Start(ctx, string(p.Name), opts...)
		span.End(trace.WithTimestamp(pEnd))
		cursor = pEnd
	}
	root.End(trace.WithTimestamp(end))
}

// Shutdown flushes the spans not yet exported and stops the exporter; ctx
// bounds the wait. Spans recorded after Shutdown are dropped.
func (t *Tracer) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	if err := t.provider.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: shutdown: %w", err)
	}
	return nil
}
