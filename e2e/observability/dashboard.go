package observability

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// maxDashboardBytes bounds a dashboard file (a ConfigMap holds 1 MiB).
const maxDashboardBytes = 1 << 20

// Dashboard is the part of a Grafana dashboard model the checks read.
type Dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []Panel `json:"panels"`
	Templating struct {
		List []Variable `json:"list"`
	} `json:"templating"`
}

// Panel is a dashboard panel; a row holds its panels when collapsed.
type Panel struct {
	ID         int      `json:"id"`
	Type       string   `json:"type"`
	Title      string   `json:"title"`
	Datasource *DataRef `json:"datasource"`
	Targets    []Target `json:"targets"`
	Panels     []Panel  `json:"panels"`
	GridPos    *GridPos `json:"gridPos"`
}

// GridPos is a panel's place on the grid.
type GridPos struct{ H, W, X, Y int }

// DataRef names a datasource.
type DataRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Target is one query of a panel.
type Target struct {
	RefID      string   `json:"refId"`
	Expr       string   `json:"expr"`
	Datasource *DataRef `json:"datasource"`
}

// Variable is a template variable. Query is a string or, in newer
// dashboards, an object holding one.
type Variable struct {
	Name  string          `json:"name"`
	Type  string          `json:"type"`
	Query json.RawMessage `json:"query"`
}

// Query is one target expression and where it is.
type Query struct {
	Where string // "panel 3 (Title) A"
	Expr  string
}

// LoadDashboard reads and decodes a dashboard file.
func LoadDashboard(path string) (*Dashboard, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxDashboardBytes+1))
	if err != nil {
		return nil, fmt.Errorf("dashboard %s: %w", path, err)
	}
	if len(b) > maxDashboardBytes {
		return nil, fmt.Errorf("dashboard %s: larger than %d bytes", path, maxDashboardBytes)
	}
	return ParseDashboard(b)
}

// ParseDashboard decodes a dashboard model.
func ParseDashboard(b []byte) (*Dashboard, error) {
	var d Dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("dashboard: decode: %w", err)
	}
	return &d, nil
}

// dsVar is the datasource variable every query goes through.
const dsVar = "${datasource}"

// allPanels flattens rows (a collapsed row holds its panels).
func (d *Dashboard) allPanels() []Panel {
	var out []Panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// Validate checks the dashboard's shape: a uid and title, a Prometheus
// datasource variable named "datasource", panels with unique ids and a
// grid position, every non-row panel with at least one target, every
// target with a refId unique in its panel and an expression, and every
// datasource reference going through the variable.
func (d *Dashboard) Validate() error {
	var errs []error
	if d.UID == "" || d.Title == "" {
		errs = append(errs, errors.New("dashboard: uid and title are required"))
	}
	hasDS := false
	for _, v := range d.Templating.List {
		if v.Name == "datasource" && v.Type == "datasource" && string(v.Query) == `"prometheus"` {
			hasDS = true
		}
	}
	if !hasDS {
		errs = append(errs, errors.New(`dashboard: no template variable "datasource" of type datasource querying prometheus`))
	}
	ids := map[int]string{}
	panels := d.allPanels()
	if len(panels) == 0 {
		errs = append(errs, errors.New("dashboard: no panels"))
	}
	for _, p := range panels {
		name := fmt.Sprintf("panel %d (%s)", p.ID, p.Title)
		if p.ID <= 0 {
			errs = append(errs, fmt.Errorf("%s: id must be positive", name))
		} else if other, dup := ids[p.ID]; dup {
			errs = append(errs, fmt.Errorf("%s: id also used by %q", name, other))
		}
		ids[p.ID] = p.Title
		if p.Title == "" || p.Type == "" || p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 {
			errs = append(errs, fmt.Errorf("%s: title, type and a grid position are required", name))
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			errs = append(errs, fmt.Errorf("%s: no targets", name))
		}
		if p.Datasource == nil || p.Datasource.UID != dsVar {
			errs = append(errs, fmt.Errorf("%s: datasource must be %s", name, dsVar))
		}
		refs := map[string]bool{}
		for _, t := range p.Targets {
			if t.RefID == "" || refs[t.RefID] {
				errs = append(errs, fmt.Errorf("%s: target refId %q missing or repeated", name, t.RefID))
			}
			refs[t.RefID] = true
			if strings.TrimSpace(t.Expr) == "" {
				errs = append(errs, fmt.Errorf("%s %s: empty expression", name, t.RefID))
			}
			if t.Datasource != nil && t.Datasource.UID != dsVar {
				errs = append(errs, fmt.Errorf("%s %s: datasource must be %s", name, t.RefID, dsVar))
			}
		}
	}
	return errors.Join(errs...)
}

// grafanaVars are Grafana's built-in interval variables and a value of
// their kind, so that an expression parses as PromQL.
var grafanaVars = map[string]string{
	"__rate_interval": "5m", "__interval": "1m", "__range": "1h",
}

// varRef matches $name and ${name}.
var varRef = regexp.MustCompile(`\$\{?(\w+)\}?`)

// labelValues matches a variable's label_values(selector, label) query.
var labelValues = regexp.MustCompile(`^\s*label_values\(\s*(.+)\s*,\s*(\w+)\s*\)\s*$`)

// Queries returns every target expression, Grafana variables replaced by
// values of their kind (intervals by durations, the dashboard's own
// variables by ".*"), and the selectors of label_values variable queries,
// each as the PromQL query "count by (label) (selector)". An unknown
// variable is an error.
func (d *Dashboard) Queries() ([]Query, error) {
	own := map[string]bool{}
	for _, v := range d.Templating.List {
		own[v.Name] = true
	}
	var errs []error
	subst := func(where, expr string) string {
		return varRef.ReplaceAllStringFunc(expr, func(m string) string {
			name := varRef.FindStringSubmatch(m)[1]
			if v, ok := grafanaVars[name]; ok {
				return v
			}
			if own[name] {
				return ".*"
			}
			errs = append(errs, fmt.Errorf("%s: unknown variable %s", where, m))
			return m
		})
	}
	var out []Query
	for _, p := range d.allPanels() {
		for _, t := range p.Targets {
			where := fmt.Sprintf("panel %d (%s) %s", p.ID, p.Title, t.RefID)
			out = append(out, Query{Where: where, Expr: subst(where, t.Expr)})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := variableQuery(v.Query)
		where := "variable " + v.Name
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			errs = append(errs, fmt.Errorf("%s: query %q is not label_values(selector, label)", where, q))
			continue
		}
		out = append(out, Query{Where: where, Expr: fmt.Sprintf("count by (%s) (%s)", m[2], subst(where, m[1]))})
	}
	return out, errors.Join(errs...)
}

// variableQuery is a variable's query string, whichever form it has.
func variableQuery(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(raw, &o)
	return o.Query
}
