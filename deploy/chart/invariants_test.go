package chart

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/chart/common"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// flagsOf runs bin/<name> --help (built by `make build`) and returns the
// flag names it lists.
func flagsOf(t *testing.T, name string) map[string]bool {
	t.Helper()
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	return helpFlags(t, filepath.Join(dir, "..", "..", "..", "bin", name), "run `make build` first")
}

// helpFlags runs bin --help and returns the flag names it lists.
func helpFlags(t *testing.T, bin, hint string) map[string]bool {
	t.Helper()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s is missing: %s (%v)", bin, hint, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "--help")
	cmd.Stdout, cmd.Stderr = &out, &out
	_ = cmd.Run() // --help exits 0 or 2 depending on the flag package; the listing is what counts
	flags := map[string]bool{}
	re := regexp.MustCompile(`^\s+-{1,2}([a-z0-9][a-z0-9-]*)`)
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			flags[m[1]] = true
		}
	}
	if len(flags) < 10 {
		t.Fatalf("%s --help listed %d flags:\n%s", bin, len(flags), out.String())
	}
	return flags
}

// argFlags returns the flag names of a container's args ("--x=y" → "x").
func argFlags(args []string) []string {
	var out []string
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		n := strings.TrimLeft(a, "-")
		if i := strings.IndexByte(n, '='); i >= 0 {
			n = n[:i]
		}
		out = append(out, n)
	}
	return out
}

// argValue returns the value of --name=value in args.
func argValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func container(ps *corev1.PodSpec, name string) *corev1.Container {
	for i := range ps.Containers {
		if ps.Containers[i].Name == name {
			return &ps.Containers[i]
		}
	}
	return nil
}

// find returns the objects of a kind.
func find(objs []Object, kind string) []Object {
	var out []Object
	for _, o := range objs {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func componentOf(o Object) string {
	var labels map[string]string
	switch t := o.Typed.(type) {
	case *appsv1.Deployment:
		labels = t.Labels
	case *appsv1.StatefulSet:
		labels = t.Labels
	}
	return labels["app.kubernetes.io/component"]
}

// externalSecrets collects the Secret names a value set references (keys
// existingSecret, tlsSecretName, iceCredentialSecret): the documented
// external Secrets an operator creates.
func externalSecrets(v any, out map[string]bool) {
	switch m := v.(type) {
	case common.Values:
		externalSecrets(map[string]any(m), out)
	case map[string]any:
		for k, x := range m {
			if s, ok := x.(string); ok && s != "" && (k == "existingSecret" || k == "tlsSecretName" || k == "iceCredentialSecret") {
				out[s] = true
			}
			externalSecrets(x, out)
		}
	case []any:
		for _, x := range m {
			externalSecrets(x, out)
		}
	}
}

// checkSecurity: non-root, read-only root filesystem, no privilege
// escalation, every capability dropped, on every container.
func checkSecurity(o Object, ps *corev1.PodSpec) error {
	if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot {
		return fmt.Errorf("%s %s: pod not runAsNonRoot", o.Kind, o.Name)
	}
	if ps.SecurityContext.RunAsUser == nil || *ps.SecurityContext.RunAsUser == 0 {
		return fmt.Errorf("%s %s: pod runs as root", o.Kind, o.Name)
	}
	all := append(append([]corev1.Container{}, ps.InitContainers...), ps.Containers...)
	for _, c := range all {
		sc := c.SecurityContext
		switch {
		case sc == nil:
			return fmt.Errorf("%s %s container %s: no securityContext", o.Kind, o.Name, c.Name)
		case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
			return fmt.Errorf("%s %s container %s: root filesystem writable", o.Kind, o.Name, c.Name)
		case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
			return fmt.Errorf("%s %s container %s: privilege escalation allowed", o.Kind, o.Name, c.Name)
		case sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL":
			return fmt.Errorf("%s %s container %s: capabilities not all dropped", o.Kind, o.Name, c.Name)
		case sc.Privileged != nil && *sc.Privileged:
			return fmt.Errorf("%s %s container %s: privileged", o.Kind, o.Name, c.Name)
		}
		if c.Resources.Requests == nil || c.Resources.Limits == nil {
			return fmt.Errorf("%s %s container %s: no resource requests and limits", o.Kind, o.Name, c.Name)
		}
	}
	return nil
}

// checkReferences: every Secret and ConfigMap a pod or ingress names is
// rendered by the release or is one of the documented external Secrets;
// keys picked from a rendered one exist; every file an argument names under
// a Secret mount is a key of that Secret (for rendered Secrets).
func checkReferences(objs []Object, external map[string]bool) error {
	secrets := map[string]map[string]bool{}
	configMaps := map[string]map[string]bool{}
	for _, o := range objs {
		switch t := o.Typed.(type) {
		case *corev1.Secret:
			keys := map[string]bool{}
			for k := range t.Data {
				keys[k] = true
			}
			for k := range t.StringData {
				keys[k] = true
			}
			secrets[t.Name] = keys
		case *corev1.ConfigMap:
			keys := map[string]bool{}
			for k := range t.Data {
				keys[k] = true
			}
			configMaps[t.Name] = keys
		}
	}
	secret := func(where, name, key string) error {
		keys, ok := secrets[name]
		if !ok {
			if external[name] {
				return nil
			}
			return fmt.Errorf("%s: Secret %q is neither rendered nor a documented external Secret", where, name)
		}
		if key != "" && !keys[key] {
			return fmt.Errorf("%s: Secret %q has no key %q", where, name, key)
		}
		return nil
	}
	for _, o := range objs {
		if ing, ok := o.Typed.(*networkingv1.Ingress); ok {
			for _, tls := range ing.Spec.TLS {
				if err := secret("Ingress "+ing.Name, tls.SecretName, ""); err != nil {
					return err
				}
			}
		}
		ps := o.PodSpec()
		if ps == nil {
			continue
		}
		vols := map[string]corev1.Volume{}
		if sts, ok := o.Typed.(*appsv1.StatefulSet); ok {
			for _, pvc := range sts.Spec.VolumeClaimTemplates {
				vols[pvc.Name] = corev1.Volume{Name: pvc.Name}
			}
		}
		for _, v := range ps.Volumes {
			vols[v.Name] = v
			where := fmt.Sprintf("%s %s volume %s", o.Kind, o.Name, v.Name)
			switch {
			case v.Secret != nil:
				if err := secret(where, v.Secret.SecretName, ""); err != nil {
					return err
				}
				for _, it := range v.Secret.Items {
					if err := secret(where, v.Secret.SecretName, it.Key); err != nil {
						return err
					}
				}
			case v.ConfigMap != nil:
				if _, ok := configMaps[v.ConfigMap.Name]; !ok {
					return fmt.Errorf("%s: ConfigMap %q not rendered", where, v.ConfigMap.Name)
				}
			}
		}
		for _, c := range append(append([]corev1.Container{}, ps.InitContainers...), ps.Containers...) {
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
					if err := secret(fmt.Sprintf("%s %s env %s", o.Kind, o.Name, e.Name), e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key); err != nil {
						return err
					}
				}
			}
			for _, m := range c.VolumeMounts {
				if _, ok := vols[m.Name]; !ok {
					return fmt.Errorf("%s %s container %s mounts unknown volume %q", o.Kind, o.Name, c.Name, m.Name)
				}
			}
			for _, a := range append(append([]string{}, c.Command...), c.Args...) {
				_, val, ok := strings.Cut(a, "=")
				if !ok || !strings.HasPrefix(val, "/etc/") {
					continue
				}
				for _, m := range c.VolumeMounts {
					rel, under := strings.CutPrefix(val, m.MountPath+"/")
					v := vols[m.Name]
					if !under || v.Secret == nil || strings.Contains(rel, "$(") {
						continue
					}
					if err := secret(fmt.Sprintf("%s %s arg %s", o.Kind, o.Name, a), v.Secret.SecretName, rel); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}
