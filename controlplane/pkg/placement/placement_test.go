package placement

import (
	"math/rand/v2"
	"testing"
)

func cand(worker string, gpu uint32, used, slots int) Candidate {
	return Candidate{WorkerID: worker, GPU: gpu, Used: used, Slots: slots, WorkerUsed: used, WorkerSlots: slots, Eligible: true}
}

func TestFeasible(t *testing.T) {
	ineligible := cand("d", 0, 0, 2)
	ineligible.Eligible = false
	tests := []struct {
		name string
		in   []Candidate
		want []string
	}{
		{"empty", nil, nil},
		{"full GPU dropped", []Candidate{cand("a", 0, 2, 2), cand("b", 0, 1, 2)}, []string{"b"}},
		{"ineligible dropped", []Candidate{ineligible, cand("b", 0, 0, 1)}, []string{"b"}},
		{"zero slots dropped", []Candidate{cand("a", 0, 0, 0)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Feasible(tt.in)
			if len(got) != len(tt.want) {
				t.Fatalf("got %d candidates, want %d", len(got), len(tt.want))
			}
			for i, c := range got {
				if c.WorkerID != tt.want[i] {
					t.Errorf("candidate %d = %s, want %s", i, c.WorkerID, tt.want[i])
				}
			}
		})
	}
}

func TestSelectorsReturnEveryFeasibleCandidateOnce(t *testing.T) {
	in := []Candidate{cand("a", 0, 0, 2), cand("a", 1, 1, 2), cand("b", 0, 2, 2), cand("c", 0, 0, 1), cand("d", 0, 3, 4)}
	orig := append([]Candidate(nil), in...)
	for _, name := range []string{"spread", "pack"} {
		sel, ok := ByName(name)
		if !ok {
			t.Fatalf("no selector %q", name)
		}
		for seed := range uint64(50) {
			out := sel.Select(in, rand.New(rand.NewPCG(seed, 1)))
			if len(out) != 4 {
				t.Fatalf("%s: got %d candidates, want the 4 feasible ones", name, len(out))
			}
			seen := map[[2]any]bool{}
			for _, c := range out {
				k := [2]any{c.WorkerID, c.GPU}
				if seen[k] {
					t.Fatalf("%s: candidate %v twice", name, k)
				}
				seen[k] = true
			}
		}
		for i := range in {
			if in[i] != orig[i] {
				t.Fatalf("%s modified its input", name)
			}
		}
	}
	if _, ok := ByName("random"); ok {
		t.Fatal("unknown policy accepted")
	}
}

// Spread's first pick is the less loaded of two random candidates, so over
// many draws the emptiest GPU leads most often and the busiest never does.
func TestSpreadPrefersLessLoaded(t *testing.T) {
	in := []Candidate{cand("empty", 0, 0, 4), cand("half", 0, 2, 4), cand("busy", 0, 3, 4)}
	first := map[string]int{}
	rng := rand.New(rand.NewPCG(7, 7))
	for range 3000 {
		first[Spread{}.Select(in, rng)[0].WorkerID]++
	}
	if first["busy"] != 0 {
		t.Errorf("busiest GPU chosen first %d times; two-choice never picks the max first", first["busy"])
	}
	if first["empty"] <= first["half"] {
		t.Errorf("empty first %d times, half-full %d: want empty more often", first["empty"], first["half"])
	}
	// Not always the same GPU: concurrent replicas must not herd.
	if first["half"] == 0 {
		t.Error("spread always picked the same GPU first")
	}
}

func TestPackPrefersFullest(t *testing.T) {
	in := []Candidate{cand("empty", 0, 0, 4), cand("busy", 0, 3, 4), cand("half", 0, 2, 4)}
	out := Pack{}.Select(in, rand.New(rand.NewPCG(1, 2)))
	want := []string{"busy", "half", "empty"}
	for i, c := range out {
		if c.WorkerID != want[i] {
			t.Fatalf("order %v, want %v", ids(out), want)
		}
	}
}

func ids(cs []Candidate) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.WorkerID
	}
	return out
}
