package tts

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultMaxLen is Splitter.MaxLen when 0.
const DefaultMaxLen = 400

// Splitter cuts text into pieces to synthesise one after another: sentences,
// and pieces of at most MaxLen runes within sentences longer than that. The
// zero value is ready to use.
//
// A sentence ends at a line break, or at '.', '!', '?' or '…' (runs of them
// such as "?!" or "...", and closing quotes and brackets after them, stay
// with the sentence) followed by white space or the end of the text; the CJK
// full stops '。', '！' and '？' end a sentence whatever follows. A '.' does
// not end a sentence when the next word starts in lower case ("e.g. this"),
// or when it closes a known abbreviation ("Dr.", "vs."), an initial ("J.")
// or a dotted abbreviation ("U.S."). "3.14" and "example.com" are intact
// because no space follows their dot.
//
// A sentence longer than MaxLen runes is cut after the last clause mark
// (',', ';', ':', '—', ...) followed by a space in the last two thirds of the
// allowed length, else at the last space, else after MaxLen runes.
//
// Pieces are trimmed of surrounding white space and never empty; a piece
// with no letter or digit (a lone "…" or "—") is joined to the one before
// it, so every non-space character of the text is in exactly one piece, in
// order (FuzzSplit checks this).
type Splitter struct {
	// MaxLen is the most runes in one piece; 0 (or less) means
	// DefaultMaxLen.
	MaxLen int
}

// Split returns the pieces of text in order.
func (s Splitter) Split(text string) []string {
	maxLen := s.MaxLen
	if maxLen <= 0 {
		maxLen = DefaultMaxLen
	}
	// Each group is one sentence and the word-less ones joined to it.
	var groups [][]string
	firstHasWord := false
	for _, sent := range sentences0(text) {
		sent = strings.TrimSpace(sent)
		if sent == "" {
			continue
		}
		word := hasWord(sent)
		if len(groups) == 0 || word && (len(groups) > 1 || firstHasWord) {
			groups = append(groups, []string{sent})
		} else {
			groups[len(groups)-1] = append(groups[len(groups)-1], sent)
		}
		if len(groups) == 1 {
			firstHasWord = firstHasWord || word
		}
	}
	var out []string
	for _, g := range groups {
		out = cutLong(out, strings.Join(g, " "), maxLen)
	}
	return out
}

// sentences0 cuts text at sentence ends; the pieces are not trimmed.
func sentences0(text string) []string {
	var out []string
	start := 0
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		switch {
		case r == '\n' || r == '\r' || r == '\u2028' || r == '\u2029':
			out = append(out, text[start:i+size])
			start = i + size
			i += size
		case r == '。' || r == '！' || r == '？':
			j := skipRun(text, i+size)
			out = append(out, text[start:j])
			start, i = j, j
		case r == '.' || r == '!' || r == '?' || r == '…':
			j := skipRun(text, i+size)
			if sentenceEnd(text, start, i, j) {
				out = append(out, text[start:j])
				start = j
			}
			i = j
		default:
			i += size
		}
	}
	if start < len(text) {
		out = append(out, text[start:])
	}
	return out
}

// skipRun returns the index after the terminators and closing marks that
// follow a terminator ending at i.
func skipRun(text string, i int) int {
	for i < len(text) {
		r, size := utf8.DecodeRuneInString(text[i:])
		if !strings.ContainsRune(".!?…。！？\"')]}”’»」』", r) {
			break
		}
		i += size
	}
	return i
}

// sentenceEnd reports whether the terminator run text[i:j] (i is its first
// terminator, start the start of the sentence) ends the sentence.
func sentenceEnd(text string, start, i, j int) bool {
	if j < len(text) {
		r, _ := utf8.DecodeRuneInString(text[j:])
		if !unicode.IsSpace(r) {
			return false // "3.14", "example.com", "a.b"
		}
	}
	term := text[i:j]
	if term[0] != '.' && !strings.HasPrefix(term, "…") {
		return true // '!' and '?' always end a sentence
	}
	// The next word: "e.g. this" or "wait… what" go on.
	rest := strings.TrimLeft(text[j:], " \t")
	if r, _ := utf8.DecodeRuneInString(rest); unicode.IsLower(r) {
		return false
	}
	if strings.Trim(term, "\"')]}”’»」』") != "." {
		return true // "..." or a closing mark: no abbreviation check
	}
	// The word before the dot: letters and inner dots.
	k := i
	for k > start {
		r, size := utf8.DecodeLastRuneInString(text[:k])
		if r != '.' && !unicode.IsLetter(r) {
			break
		}
		k -= size
	}
	return !isAbbreviation(text[k:i])
}

// isAbbreviation reports whether word (the letters before a '.') is an
// initial, a dotted abbreviation or a common abbreviation that rarely ends a
// sentence.
func isAbbreviation(word string) bool {
	if word == "" {
		return false
	}
	if utf8.RuneCountInString(word) == 1 || strings.Contains(word, ".") {
		return true // "J.", "e.g.", "U.S."
	}
	switch strings.ToLower(word) {
	case "mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "vs", "cf",
		"approx", "no", "nr", "fig", "figs", "inc", "ltd", "co", "corp", "mt",
		"dept", "vol", "ca", "gen", "gov", "lt", "col", "sgt", "capt", "rev",
		"hon", "ave", "rd", "blvd", "eq", "eqs", "ch", "sec", "pp", "al":
		return true
	}
	return false
}

// hasWord reports whether s holds a letter or a digit.
func hasWord(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }) >= 0
}

// isClauseMark reports whether r ends a clause: a good place to cut a long
// sentence.
func isClauseMark(r rune) bool {
	return strings.ContainsRune(",;:—–、，；：", r)
}

// cutLong appends sent (trimmed, non-empty) to out, cut into pieces of at
// most maxLen runes.
func cutLong(out []string, sent string, maxLen int) []string {
	for {
		end, minCut, n := 0, 0, 0 // byte ends of the first maxLen and maxLen/3 runes
		for end < len(sent) && n < maxLen {
			_, size := utf8.DecodeRuneInString(sent[end:])
			end += size
			n++
			if n == maxLen/3 {
				minCut = end
			}
		}
		if end == len(sent) {
			break // the rest fits
		}
		cut := -1
		for i, r := range sent[:end] {
			next := i + utf8.RuneLen(r) // clause marks are valid runes
			if isClauseMark(r) && next >= minCut && (next == len(sent) || startsWithSpace(sent[next:])) {
				cut = next
			}
		}
		if cut < 0 {
			for i, r := range sent[:end] {
				if unicode.IsSpace(r) && i > 0 {
					cut = i
				}
			}
			// A space right after the window is as good a cut.
			if startsWithSpace(sent[end:]) {
				cut = end
			}
		}
		if cut <= 0 {
			cut = end
		}
		if piece := strings.TrimSpace(sent[:cut]); piece != "" {
			out = append(out, piece)
		}
		sent = strings.TrimLeftFunc(sent[cut:], unicode.IsSpace)
	}
	if sent != "" {
		out = append(out, sent)
	}
	return out
}

func startsWithSpace(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return s != "" && unicode.IsSpace(r)
}
