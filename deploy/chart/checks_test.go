package chart

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestChecksCatchBrokenRenders: the reference and security checks of
// TestRenderInvariants fail on objects broken on purpose (so their passing
// on the real renders means something).
func TestChecksCatchBrokenRenders(t *testing.T) {
	dir, vals := loadSet(t, valueSets[0])
	ch, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	external := map[string]bool{"avatarfleet-fleet-tls": true, "avatarfleet-etcd": true, "avatarfleet-nats": true}
	cases := []struct {
		name    string
		breakIt func(objs []Object) []Object
	}{
		{"unknown secret", func(objs []Object) []Object {
			ps := workerPod(objs)
			ps.Volumes[len(ps.Volumes)-1].Secret.SecretName = "nobody-made-this"
			return objs
		}},
		{"missing key", func(objs []Object) []Object {
			ps := controlPlanePod(objs)
			c := container(ps, "controlplane")
			for i, a := range c.Args {
				if a == "--api-keys-file=/etc/avatarfleet/api-keys/api-keys.yaml" {
					c.Args[i] = "--api-keys-file=/etc/avatarfleet/api-keys/other.yaml"
				}
			}
			return objs
		}},
		{"generated secret dropped", func(objs []Object) []Object {
			var out []Object
			for _, o := range objs {
				if !(o.Kind == "Secret" && o.Name == "avatarfleet-token-keys") {
					out = append(out, o)
				}
			}
			return out
		}},
		{"writable root", func(objs []Object) []Object {
			f := false
			container(workerPod(objs), "worker").SecurityContext.ReadOnlyRootFilesystem = &f
			return objs
		}},
		{"root user", func(objs []Object) []Object {
			var root int64
			controlPlanePod(objs).SecurityContext.RunAsUser = &root
			return objs
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			objs, err := Render(ch, "avatarfleet", testNamespace, vals)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkAll(objs, external); err != nil {
				t.Fatalf("the unbroken render fails: %v", err)
			}
			objs = c.breakIt(objs)
			if err := checkAll(objs, external); err == nil {
				t.Error("the broken render passed the checks")
			} else {
				t.Logf("caught: %v", err)
			}
		})
	}
	// a flag the binary lacks is caught by the comparison TestRenderInvariants makes
	flags := flagsOf(t, "worker")
	bad := 0
	for _, f := range argFlags([]string{"--gpus=auto", "--no-such-flag=1", "--slots-per-gpu=2"}) {
		if !flags[f] {
			bad++
		}
	}
	if bad != 1 {
		t.Errorf("%d unknown flags found, want 1", bad)
	}
}

func checkAll(objs []Object, external map[string]bool) error {
	if err := checkReferences(objs, external); err != nil {
		return err
	}
	for _, o := range objs {
		if ps := o.PodSpec(); ps != nil {
			if err := checkSecurity(o, ps); err != nil {
				return err
			}
		}
	}
	return nil
}

func workerPod(objs []Object) *corev1.PodSpec {
	for _, o := range objs {
		if sts, ok := o.Typed.(*appsv1.StatefulSet); ok && componentOf(o) == "worker" {
			return &sts.Spec.Template.Spec
		}
	}
	return nil
}

func controlPlanePod(objs []Object) *corev1.PodSpec {
	for _, o := range objs {
		if d, ok := o.Typed.(*appsv1.Deployment); ok && componentOf(o) == "controlplane" {
			return &d.Spec.Template.Spec
		}
	}
	return nil
}
