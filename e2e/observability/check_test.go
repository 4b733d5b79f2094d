package observability

import (
	"encoding/json"
	"strings"
	"testing"
)

// exposition is a small scrape: a counter, a gauge, a labelled histogram.
const exposition = `# HELP x_requests_total Requests.
# TYPE x_requests_total counter
x_requests_total{code="200"} 3
# HELP x_slots Slots.
# TYPE x_slots gauge
x_slots{worker="w1",gpu="0"} 4
# HELP x_latency_seconds Latency.
# TYPE x_latency_seconds histogram
x_latency_seconds_bucket{result="placed",le="0.1"} 1
x_latency_seconds_bucket{result="placed",le="+Inf"} 2
x_latency_seconds_sum{result="placed"} 0.3
x_latency_seconds_count{result="placed"} 2
# HELP x_unobserved_seconds Never observed.
# TYPE x_unobserved_seconds histogram
`

// TestCheckQueries: each query's metrics, matchers and grouping labels are
// found in the catalog, or the check says which is missing.
func TestCheckQueries(t *testing.T) {
	cat, err := ParseExposition("test", strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		expr, wantErr string
	}{
		{`sum by (code) (rate(x_requests_total[5m]))`, ""},
		{`histogram_quantile(0.95, sum by (le, result) (rate(x_latency_seconds_bucket{result="placed"}[5m])))`, ""},
		{`sum(rate(x_latency_seconds_count[5m])) / sum(rate(x_latency_seconds_sum[5m]))`, ""},
		{`max by (worker, gpu) (x_slots{worker=~".*"}) > 0`, ""},
		{`sum by (instance) (x_slots)`, ""}, // a target label
		{`sum without (gpu) (x_slots)`, ""},
		{`rate(x_requests[5m])`, "x_requests is exposed by neither binary"},
		{`x_latency_seconds`, "x_latency_seconds is exposed by neither binary"},
		{`x_unobserved_seconds_bucket`, "x_unobserved_seconds_bucket is exposed by neither binary"},
		{`x_slots{node="a"}`, `x_slots has no label "node"`},
		{`x_latency_seconds_sum{le="1"}`, `x_latency_seconds_sum has no label "le"`},
		{`sum by (pod) (x_slots)`, `by "pod"`},
		{`{worker="w1"}`, "names no metric"},
		{`sum(rate(x_requests_total[5m])`, "parse"},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			errs := cat.Check(Query{Where: "q", Expr: tc.expr})
			if tc.wantErr == "" {
				if len(errs) > 0 {
					t.Fatalf("unexpected errors: %v", errs)
				}
				return
			}
			if len(errs) == 0 || !strings.Contains(errs[0].Error(), tc.wantErr) {
				t.Fatalf("errors %v, want one with %q", errs, tc.wantErr)
			}
		})
	}
}

// TestValidateDashboard: a well-formed dashboard passes; each broken
// variant is refused with a message that names the fault.
func TestValidateDashboard(t *testing.T) {
	good := func() map[string]any {
		ds := map[string]any{"type": "prometheus", "uid": "${datasource}"}
		return map[string]any{
			"uid": "u", "title": "T",
			"templating": map[string]any{"list": []any{
				map[string]any{"name": "datasource", "type": "datasource", "query": "prometheus"},
				map[string]any{"name": "worker", "type": "query", "datasource": ds,
					"query": map[string]any{"query": "label_values(x_slots, worker)"}},
			}},
			"panels": []any{
				map[string]any{"id": 1, "type": "row", "title": "R", "gridPos": map[string]any{"h": 1, "w": 24}},
				map[string]any{"id": 2, "type": "timeseries", "title": "P", "datasource": ds,
					"gridPos": map[string]any{"h": 8, "w": 8},
					"targets": []any{map[string]any{"refId": "A", "datasource": ds,
						"expr": `sum by (gpu) (x_slots{worker=~"$worker"}) / sum(rate(x_requests_total[$__rate_interval]))`}}},
			},
		}
	}
	panel := func(d map[string]any) map[string]any { return d["panels"].([]any)[1].(map[string]any) }
	target := func(d map[string]any) map[string]any { return panel(d)["targets"].([]any)[0].(map[string]any) }
	cat, err := ParseExposition("test", strings.NewReader(exposition))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		break_  func(d map[string]any)
		wantErr string
	}{
		{"good", func(map[string]any) {}, ""},
		{"no datasource variable", func(d map[string]any) {
			d["templating"].(map[string]any)["list"] = []any{}
		}, `no template variable "datasource"`},
		{"duplicate id", func(d map[string]any) { panel(d)["id"] = 1 }, "id also used"},
		{"no targets", func(d map[string]any) { panel(d)["targets"] = []any{} }, "no targets"},
		{"fixed datasource", func(d map[string]any) {
			panel(d)["datasource"] = map[string]any{"type": "prometheus", "uid": "prod"}
		}, "datasource must be"},
		{"unknown variable", func(d map[string]any) { target(d)["expr"] = `x_slots{worker=~"$node"}` }, "unknown variable $node"},
		{"unknown metric", func(d map[string]any) { target(d)["expr"] = `x_nothing` }, "x_nothing is exposed by neither"},
		{"variable on a missing label", func(d map[string]any) {
			d["templating"].(map[string]any)["list"].([]any)[1].(map[string]any)["query"] = "label_values(x_slots, node)"
		}, `count by "node"`},
		{"no grid position", func(d map[string]any) { delete(panel(d), "gridPos") }, "grid position"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := good()
			tc.break_(m)
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			d, err := ParseDashboard(b)
			if err != nil {
				t.Fatal(err)
			}
			err = cat.CheckDashboard(d)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one with %q", err, tc.wantErr)
			}
		})
	}
}
