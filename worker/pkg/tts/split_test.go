package tts

import (
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

func TestSplit(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"blank", " \n\t \n", nil},
		{"one", "Hello world", []string{"Hello world"}},
		{"two", "Hello world. How are you?", []string{"Hello world.", "How are you?"}},
		{"bang and question", "Stop! Really?! Yes.", []string{"Stop!", "Really?!", "Yes."}},
		{"ellipsis char", "Wait… Then go.", []string{"Wait…", "Then go."}},
		{"ellipsis dots", "Wait... Then go.", []string{"Wait...", "Then go."}},
		{"ellipsis lower goes on", "Well… maybe not.", []string{"Well… maybe not."}},
		{"decimal", "Pi is 3.14 roughly. Next.", []string{"Pi is 3.14 roughly.", "Next."}},
		{"domain", "See example.com now. Ok.", []string{"See example.com now.", "Ok."}},
		{"e.g.", "Use fruit, e.g. apples. Then eat.", []string{"Use fruit, e.g. apples.", "Then eat."}},
		{"i.e. capital", "One thing, i.e. This one. Done.", []string{"One thing, i.e. This one.", "Done."}},
		{"title", "Dr. Smith and Mr. Jones met. They talked.", []string{"Dr. Smith and Mr. Jones met.", "They talked."}},
		{"initials", "J. R. R. Tolkien wrote it. Yes.", []string{"J. R. R. Tolkien wrote it.", "Yes."}},
		{"dotted", "He moved to the U.S. In May.", []string{"He moved to the U.S. In May."}},
		{"number end", "It was 2024. Then it was not.", []string{"It was 2024.", "Then it was not."}},
		{"quote", `He said "Go." Then left.`, []string{`He said "Go."`, "Then left."}},
		{"paren", "(It works.) Fine.", []string{"(It works.)", "Fine."}},
		{"newlines", "Title\nFirst line\r\n\nSecond", []string{"Title", "First line", "Second"}},
		{"no final stop", "One. Two", []string{"One.", "Two"}},
		{"cjk", "你好。今天好吗？好！", []string{"你好。", "今天好吗？", "好！"}},
		{"punctuation joins before", "Hello. ... Bye.", []string{"Hello. ...", "Bye."}},
		{"punctuation first joins next", "— Hello there. Bye.", []string{"— Hello there.", "Bye."}},
		{"only punctuation", "... !!", []string{"... !!"}},
		{"spaces trimmed", "   Hi.    There.   ", []string{"Hi.", "There."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Splitter{}.Split(tt.in)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Split(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestSplitMaxLen(t *testing.T) {
	tests := []struct {
		name   string
		maxLen int
		in     string
		want   []string
	}{
		{"at comma", 30, "one two three four, five six seven eight nine ten.",
			[]string{"one two three four,", "five six seven eight nine ten."}},
		{"comma too early uses space", 30, "one, two three four five six seven eight nine ten.",
			[]string{"one, two three four five six", "seven eight nine ten."}},
		{"at space", 10, "aaaa bbbb cccc dddd", []string{"aaaa bbbb", "cccc dddd"}},
		{"space right after window", 4, "aaaa bbbb", []string{"aaaa", "bbbb"}},
		{"hard cut", 4, "abcdefghij", []string{"abcd", "efgh", "ij"}},
		{"hard cut runes", 2, "äöüß", []string{"äö", "üß"}},
		{"exact", 5, "abcde", []string{"abcde"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Splitter{MaxLen: tt.maxLen}.Split(tt.in)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Split(%q)\n got %q\nwant %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestSplitDefaultMaxLen(t *testing.T) {
	in := strings.Repeat("word, ", 1000)
	for _, p := range (Splitter{}).Split(in) {
		if n := utf8.RuneCountInString(p); n > DefaultMaxLen {
			t.Fatalf("piece of %d runes, want at most %d", n, DefaultMaxLen)
		}
	}
}

// Split is linear: long runs of word-less sentences or of tiny pieces do
// not make it quadratic.
func TestSplitLinear(t *testing.T) {
	for _, in := range []string{strings.Repeat("! ", 100000), strings.Repeat("ab ", 100000), strings.Repeat("x", 200000)} {
		for _, maxLen := range []int{0, 1, 3} {
			start := time.Now()
			got := Splitter{MaxLen: maxLen}.Split(in)
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("%d bytes, MaxLen %d: %d pieces took %v", len(in), maxLen, len(got), d)
			}
		}
	}
}

// nonSpace returns the non-space runes of s in order (invalid bytes count
// as one rune each, as range does).
func nonSpace(s string) string {
	var b strings.Builder
	for i, r := range s {
		if !unicode.IsSpace(r) {
			_, size := utf8.DecodeRuneInString(s[i:])
			b.WriteString(s[i : i+size])
		}
	}
	return b.String()
}

func FuzzSplit(f *testing.F) {
	for _, s := range []string{
		"", "Hello world. How are you?", "e.g. 3.14 Dr. J. R. R. Tolkien… wow!!",
		"a\nb\r\nc", "你好。今天好吗？", "— ... !!", strings.Repeat("abc ", 200),
		strings.Repeat("x", 900), "\xff\xfe. \x80a. b", "one,two,three, four",
	} {
		f.Add(s, 0)
		f.Add(s, 7)
	}
	f.Fuzz(func(t *testing.T, text string, maxLen int) {
		maxLen %= 500
		got := Splitter{MaxLen: maxLen}.Split(text)
		limit := maxLen
		if limit <= 0 {
			limit = DefaultMaxLen
		}
		for _, p := range got {
			if p == "" || strings.TrimSpace(p) != p {
				t.Fatalf("piece %q is empty or not trimmed", p)
			}
			if n := utf8.RuneCountInString(p); n > limit {
				t.Fatalf("piece of %d runes, limit %d", n, limit)
			}
		}
		// Pieces are compared one by one: joining them could fuse two
		// invalid bytes into a valid (space) rune, as "\xc2" + "\x85" does.
		var kept strings.Builder
		for _, p := range got {
			kept.WriteString(nonSpace(p))
		}
		if a, b := kept.String(), nonSpace(text); a != b {
			t.Fatalf("non-space characters changed:\n got %q\nwant %q", a, b)
		}
	})
}
