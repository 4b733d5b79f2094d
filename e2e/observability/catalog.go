package observability

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// maxExpositionBytes bounds one scrape.
const maxExpositionBytes = 16 << 20

// Series is what a catalog knows of one series name: the labels its
// samples carry and which source exposed it.
type Series struct {
	Labels map[string]bool
	Source string
}

// Catalog maps each series name a scrape holds (a histogram's _bucket,
// _sum and _count; a counter's name as exposed, with _total) to its labels.
type Catalog map[string]Series

// ParseExposition reads a Prometheus text exposition into a catalog;
// families without samples are left out (a vector nobody observed yet).
func ParseExposition(source string, r io.Reader) (Catalog, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(r, maxExpositionBytes))
	if err != nil {
		return nil, fmt.Errorf("parse %s exposition: %w", source, err)
	}
	c := Catalog{}
	add := func(name string, m *dto.Metric, extra ...string) {
		s, ok := c[name]
		if !ok {
			s = Series{Labels: map[string]bool{}, Source: source}
			c[name] = s
		}
		for _, l := range m.GetLabel() {
			s.Labels[l.GetName()] = true
		}
		for _, l := range extra {
			s.Labels[l] = true
		}
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				add(name+"_bucket", m, model.BucketLabel)
				add(name+"_sum", m)
				add(name+"_count", m)
			case dto.MetricType_SUMMARY:
				add(name, m, model.QuantileLabel)
				add(name+"_sum", m)
				add(name+"_count", m)
			default:
				add(name, m)
			}
		}
	}
	return c, nil
}

// Merge adds o's series to c (the labels of a name both hold are joined).
func (c Catalog) Merge(o Catalog) {
	for name, s := range o {
		cur, ok := c[name]
		if !ok {
			c[name] = Series{Labels: maps.Clone(s.Labels), Source: s.Source}
			continue
		}
		for l := range s.Labels {
			cur.Labels[l] = true
		}
		cur.Source += "+" + s.Source
		c[name] = cur
	}
}

// TargetLabels are the labels Prometheus adds to every scraped series,
// which no exposition carries.
var TargetLabels = []string{model.InstanceLabel, model.JobLabel}

// Check parses q with the PromQL parser and returns an error for each
// metric it selects that the catalog lacks, each label matcher on a label
// that metric does not carry, and each "by" grouping label that none of
// the aggregated metrics carries (TargetLabels allowed).
func (c Catalog) Check(q Query) []error {
	expr, err := parser.NewParser(parser.Options{}).ParseExpr(q.Expr)
	if err != nil {
		return []error{fmt.Errorf("%s: parse %q: %w", q.Where, q.Expr, err)}
	}
	var errs []error
	parser.Inspect(expr, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			errs = append(errs, c.checkSelector(q.Where, n)...)
		case *parser.AggregateExpr:
			if n.Without {
				return nil
			}
			have, known := c.labelsUnder(n.Expr)
			if !known {
				return nil // the unknown metric is reported on its own
			}
			for _, l := range n.Grouping {
				if !have[l] && !slices.Contains(TargetLabels, l) {
					errs = append(errs, fmt.Errorf("%s: %s by %q: no aggregated metric has that label (have %v)", q.Where, n.Op, l, sorted(have)))
				}
			}
		}
		return nil
	})
	return errs
}

func (c Catalog) checkSelector(where string, vs *parser.VectorSelector) []error {
	name := vs.Name
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			name = m.Value
		}
	}
	if name == "" {
		return []error{fmt.Errorf("%s: selector %s names no metric", where, vs)}
	}
	s, ok := c[name]
	if !ok {
		return []error{fmt.Errorf("%s: metric %s is exposed by neither binary", where, name)}
	}
	var errs []error
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel || s.Labels[m.Name] || slices.Contains(TargetLabels, m.Name) {
			continue
		}
		errs = append(errs, fmt.Errorf("%s: %s has no label %q (has %v)", where, name, m.Name, sorted(s.Labels)))
	}
	return errs
}

// labelsUnder is the union of the labels of the metrics e selects; known
// is false when the catalog lacks one of them.
func (c Catalog) labelsUnder(e parser.Expr) (have map[string]bool, known bool) {
	have, known = map[string]bool{}, true
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		if vs, ok := node.(*parser.VectorSelector); ok {
			s, ok := c[vs.Name]
			known = known && ok
			for l := range s.Labels {
				have[l] = true
			}
		}
		return nil
	})
	return have, known
}

func sorted(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// CheckDashboard validates d's shape and checks every query against c.
func (c Catalog) CheckDashboard(d *Dashboard) error {
	errs := []error{d.Validate()}
	qs, err := d.Queries()
	errs = append(errs, err)
	for _, q := range qs {
		errs = append(errs, c.Check(q)...)
	}
	return errors.Join(errs...)
}
