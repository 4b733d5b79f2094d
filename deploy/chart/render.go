// Package chart renders the AvatarFleet Helm chart (deploy/helm/avatarfleet)
// with the Helm SDK and decodes what it renders strictly into the typed
// Kubernetes API objects, for the tests that prove the chart: every
// documented value set renders, lints and holds the fleet's invariants, and
// a real kube-apiserver accepts an install and an upgrade.
package chart

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// MaxValuesFile bounds a values file read.
const MaxValuesFile = 1 << 20

// Object is one rendered manifest: its kind and name, the template it came
// from, its YAML, and the typed object it decodes into (nil for a kind
// outside k8s.io/api, such as a ServiceMonitor: then Unstructured is set).
type Object struct {
	Kind, APIVersion, Name, Template string
	YAML                             string
	Typed                            any
	Unstructured                     map[string]any
}

// Dir is the chart's directory in this repository.
func Dir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("locate the chart: no caller information")
	}
	return filepath.Join(filepath.Dir(file), "..", "helm", "avatarfleet"), nil
}

// Load reads the chart from dir.
func Load(dir string) (*chartv2.Chart, error) {
	ch, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %w", dir, err)
	}
	return ch, nil
}

// ReadValues reads a values file (at most MaxValuesFile bytes).
func ReadValues(path string) (map[string]any, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("values %s: %w", path, err)
	}
	if fi.Size() > MaxValuesFile {
		return nil, fmt.Errorf("values %s: %d bytes, at most %d", path, fi.Size(), MaxValuesFile)
	}
	v, err := common.ReadValuesFile(path)
	if err != nil {
		return nil, fmt.Errorf("values %s: %w", path, err)
	}
	return v.AsMap(), nil
}

// Values merges overrides over the chart's defaults and checks them against
// values.schema.json, as `helm install` does.
func Values(ch *chartv2.Chart, release, namespace string, overrides map[string]any) (common.Values, error) {
	vals, err := chartutil.ToRenderValuesWithSchemaValidation(ch, overrides,
		common.ReleaseOptions{Name: release, Namespace: namespace, IsInstall: true, Revision: 1},
		common.DefaultCapabilities, false)
	if err != nil {
		return nil, fmt.Errorf("values of %s: %w", release, err)
	}
	return vals, nil
}

// Render renders the chart with overrides as release in namespace (no
// cluster: lookup finds nothing) and decodes every object strictly.
func Render(ch *chartv2.Chart, release, namespace string, overrides map[string]any) ([]Object, error) {
	vals, err := Values(ch, release, namespace, overrides)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		return nil, fmt.Errorf("render %s: %w", release, err)
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []Object
	for _, n := range names {
		if strings.HasSuffix(n, "NOTES.txt") || strings.HasPrefix(filepath.Base(n), "_") {
			continue
		}
		docs := releaseutil.SplitManifests(files[n])
		keys := make([]string, 0, len(docs))
		for k := range docs {
			keys = append(keys, k)
		}
		sort.Sort(releaseutil.BySplitManifestsOrder(keys))
		for _, k := range keys {
			doc := docs[k]
			if strings.TrimSpace(doc) == "" {
				continue
			}
			obj, err := Decode(doc)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", n, err)
			}
			obj.Template = n
			out = append(out, obj)
		}
	}
	return out, nil
}

// typed maps the kinds the chart renders to their k8s.io/api types.
func typed(apiVersion, kind string) (any, bool) {
	switch apiVersion + "/" + kind {
	case "v1/Secret":
		return &corev1.Secret{}, true
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}, true
	case "v1/Service":
		return &corev1.Service{}, true
	case "v1/ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "apps/v1/Deployment":
		return &appsv1.Deployment{}, true
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}, true
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, true
	case "autoscaling/v2/HorizontalPodAutoscaler":
		return &autoscalingv2.HorizontalPodAutoscaler{}, true
	case "networking.k8s.io/v1/Ingress":
		return &networkingv1.Ingress{}, true
	}
	return nil, false
}

// Decode decodes one YAML manifest strictly: an unknown or duplicated field
// is an error, and so is a kind of k8s.io/api the chart does not use.
// ServiceMonitors (monitoring.coreos.com/v1, not in k8s.io/api) decode into
// a map.
func Decode(doc string) (Object, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
		return Object{}, fmt.Errorf("decode manifest: %w", err)
	}
	if head.Kind == "" || head.APIVersion == "" || head.Metadata.Name == "" {
		return Object{}, fmt.Errorf("manifest without kind, apiVersion or name:\n%s", doc)
	}
	o := Object{Kind: head.Kind, APIVersion: head.APIVersion, Name: head.Metadata.Name, YAML: doc}
	if t, ok := typed(head.APIVersion, head.Kind); ok {
		if err := yaml.UnmarshalStrict([]byte(doc), t); err != nil {
			return Object{}, fmt.Errorf("%s %s: strict decode: %w", head.Kind, head.Metadata.Name, err)
		}
		o.Typed = t
		return o, nil
	}
	if head.APIVersion == "monitoring.coreos.com/v1" && head.Kind == "ServiceMonitor" {
		m := map[string]any{}
		if err := yaml.UnmarshalStrict([]byte(doc), &m); err != nil {
			return Object{}, fmt.Errorf("%s %s: strict decode: %w", head.Kind, head.Metadata.Name, err)
		}
		o.Unstructured = m
		return o, nil
	}
	return Object{}, fmt.Errorf("%s %s (%s): a kind the chart is not known to render", head.Kind, head.Metadata.Name, head.APIVersion)
}

// PodSpec is the pod template of a workload object, or nil.
func (o Object) PodSpec() *corev1.PodSpec {
	switch t := o.Typed.(type) {
	case *appsv1.Deployment:
		return &t.Spec.Template.Spec
	case *appsv1.StatefulSet:
		return &t.Spec.Template.Spec
	}
	return nil
}
