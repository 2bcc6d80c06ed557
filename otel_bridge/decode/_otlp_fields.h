/* The OTLP field numbers the C decoder reads, one table: X(message, field, number). tests/test_decode.py
 * checks every row against the opentelemetry-proto descriptors, so a row cannot name a field wrongly. The
 * enum below gives each row a name, message__field (Event and Link are Span.Event and Span.Link). */
#ifndef OTEL_BRIDGE_OTLP_FIELDS_H
#define OTEL_BRIDGE_OTLP_FIELDS_H

#define OTLP_FIELDS(X)                                  \
    X(ExportTraceServiceRequest, resource_spans, 1)     \
    X(ResourceSpans, resource, 1)                       \
    X(ResourceSpans, scope_spans, 2)                    \
    X(ResourceSpans, schema_url, 3)                     \
    X(Resource, attributes, 1)                          \
    X(Resource, dropped_attributes_count, 2)            \
    X(Resource, entity_refs, 3)                         \
    X(EntityRef, schema_url, 1)                         \
    X(EntityRef, type, 2)                               \
    X(EntityRef, id_keys, 3)                            \
    X(EntityRef, description_keys, 4)                   \
    X(ScopeSpans, scope, 1)                             \
    X(ScopeSpans, spans, 2)                             \
    X(ScopeSpans, schema_url, 3)                        \
    X(InstrumentationScope, name, 1)                    \
    X(InstrumentationScope, version, 2)                 \
    X(InstrumentationScope, attributes, 3)              \
    X(InstrumentationScope, dropped_attributes_count, 4) \
    X(Span, trace_id, 1)                                \
    X(Span, span_id, 2)                                 \
    X(Span, trace_state, 3)                             \
    X(Span, parent_span_id, 4)                          \
    X(Span, name, 5)                                    \
    X(Span, kind, 6)                                    \
    X(Span, start_time_unix_nano, 7)                    \
    X(Span, end_time_unix_nano, 8)                      \
    X(Span, attributes, 9)                              \
    X(Span, dropped_attributes_count, 10)               \
    X(Span, events, 11)                                 \
    X(Span, dropped_events_count, 12)                   \
    X(Span, links, 13)                                  \
    X(Span, dropped_links_count, 14)                    \
    X(Span, status, 15)                                 \
    X(Span, flags, 16)                                  \
    X(Event, time_unix_nano, 1)                         \
    X(Event, name, 2)                                   \
    X(Event, attributes, 3)                             \
    X(Event, dropped_attributes_count, 4)               \
    X(Link, trace_id, 1)                                \
    X(Link, span_id, 2)                                 \
    X(Link, trace_state, 3)                             \
    X(Link, attributes, 4)                              \
    X(Link, dropped_attributes_count, 5)                \
    X(Link, flags, 6)                                   \
    X(Status, message, 2)                               \
    X(Status, code, 3)                                  \
    X(KeyValue, key, 1)                                 \
    X(KeyValue, value, 2)                               \
    X(AnyValue, string_value, 1)                        \
    X(AnyValue, bool_value, 2)                          \
    X(AnyValue, int_value, 3)                           \
    X(AnyValue, double_value, 4)                        \
    X(AnyValue, array_value, 5)                         \
    X(AnyValue, kvlist_value, 6)                        \
    X(AnyValue, bytes_value, 7)                         \
    X(ArrayValue, values, 1)                            \
    X(KeyValueList, values, 1)

#define OTLP_FIELD_ENUM(message, field, number) message##__##field = number,
enum { OTLP_FIELDS(OTLP_FIELD_ENUM) };
#undef OTLP_FIELD_ENUM

#endif
