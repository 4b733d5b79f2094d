package fleetstore

import (
	"context"
	"errors"
	"fmt"
	"regexp"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The durable speech queue: each text a session was asked to speak is an
// entry speech/<session>/<speech id> holding what of it is still to be
// spoken (whole sentences). The control plane writes an entry before it
// forwards the text to the worker; the worker shortens it as each sentence
// finishes playing and deletes it after the last one, so whatever is left
// when a worker is lost is exactly what its replacement must speak (the
// sentence being spoken restarts). An interrupt and the session's end
// clear the queue. The speech id is the etcd revision the enqueue read,
// zero-padded, so ids sort in the order the texts were queued.

// MaxPendingSpeech bounds the text of one session's speech queue in etcd,
// in bytes: the same bound a worker's pipeline keeps on text waiting for
// synthesis (pipeline.DefaultMaxPendingText), so a queue the store accepts
// fits on any worker it is replayed to.
const MaxPendingSpeech = 64 << 10

// maxSpeechRetries bounds the enqueue's optimistic retries (the session
// record or the queue changed between the read and the write).
const maxSpeechRetries = 32

// ErrSpeechQueueFull is returned by EnqueueSpeech when the text would take
// the session's queue past MaxPendingSpeech.
var ErrSpeechQueueFull = errors.New("speech queue full")

// ErrSessionEnded is returned by EnqueueSpeech for a session that has ended.
var ErrSessionEnded = errors.New("session has ended")

var speechIDPattern = regexp.MustCompile(`^[0-9]{20}$`)

// ValidSpeechID reports whether id is a speech id EnqueueSpeech makes (a
// worker checks before it builds a key from one).
func ValidSpeechID(id string) bool { return speechIDPattern.MatchString(id) }

// SpeechEntry is one queued text of a session: its id and the part of it
// not yet spoken.
type SpeechEntry struct {
	ID   string
	Text string
}

// EnqueueSpeech appends text to the speech queue of a session that has not
// ended and returns its speech id; with replace, the queue is emptied first
// (an interrupting speak), in the same transaction. The write is guarded by
// the session record's revision, so it cannot outlive the session: the
// transaction that ends a session clears its queue. It fails with
// ErrNotFound, ErrSessionEnded, or ErrSpeechQueueFull when the queue would
// hold more than MaxPendingSpeech bytes of text.
func (s *Store) EnqueueSpeech(ctx context.Context, sessionID, text string, replace bool) (string, error) {
	if len(text) > MaxPendingSpeech {
		return "", fmt.Errorf("%w: session %s: a text of %d bytes, limit %d", ErrSpeechQueueFull, sessionID, len(text), MaxPendingSpeech)
	}
	sessKey, prefix := s.keys.Session(sessionID), s.keys.SessionSpeech(sessionID)
	for range maxSpeechRetries {
		resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(sessKey), clientv3.OpGet(prefix, clientv3.WithPrefix())).Commit()
		if err != nil {
			return "", fmt.Errorf("enqueue speech for %s: %w", sessionID, err)
		}
		sessKVs := resp.Responses[0].GetResponseRange().GetKvs()
		if len(sessKVs) == 0 {
			return "", fmt.Errorf("enqueue speech for %s: %w", sessionID, ErrNotFound)
		}
		sess, err := DecodeSession(sessKVs[0].Value)
		if err != nil {
			return "", fmt.Errorf("enqueue speech for %s: %w", sessionID, err)
		}
		if Terminal(sess.GetState()) {
			return "", fmt.Errorf("enqueue speech for %s: %w", sessionID, ErrSessionEnded)
		}
		pending := 0
		if !replace {
			for _, kv := range resp.Responses[1].GetResponseRange().GetKvs() {
				pending += len(kv.Value)
			}
		}
		if pending+len(text) > MaxPendingSpeech {
			return "", fmt.Errorf("%w: session %s: %d bytes of text wait to be spoken, %d more would pass the limit of %d",
				ErrSpeechQueueFull, sessionID, pending, len(text), MaxPendingSpeech)
		}
		// The id is the revision read: any enqueue that commits after this
		// read has a higher one, and one that committed before it would make
		// this transaction fail (its key is newer than rev).
		rev := resp.Header.Revision
		id := fmt.Sprintf("%020d", rev)
		key := s.keys.Speech(sessionID, id)
		var ops []clientv3.Op
		if replace {
			// Every queued id is below this one; etcd refuses a put inside
			// a range deleted by the same transaction, so the range stops
			// short of the new key.
			ops = append(ops, clientv3.OpDelete(prefix, clientv3.WithRange(key)))
		}
		ops = append(ops, clientv3.OpPut(key, text))
		tresp, err := s.cli.Txn(ctx).
			If(
				clientv3.Compare(clientv3.ModRevision(sessKey), "=", sessKVs[0].ModRevision),
				clientv3.Compare(clientv3.ModRevision(prefix), "<", rev+1).WithPrefix(),
			).
			Then(ops...).
			Commit()
		if err != nil {
			return "", fmt.Errorf("enqueue speech for %s: %w", sessionID, err)
		}
		if tresp.Succeeded {
			return id, nil
		}
	}
	return "", fmt.Errorf("enqueue speech for %s: the session or its queue kept changing: %w", sessionID, ErrConflict)
}

// PendingSpeech lists a session's queued texts in the order they were
// queued, each with what is left of it to speak.
func (s *Store) PendingSpeech(ctx context.Context, sessionID string) ([]SpeechEntry, error) {
	prefix := s.keys.SessionSpeech(sessionID)
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, fmt.Errorf("pending speech of %s: %w", sessionID, err)
	}
	out := make([]SpeechEntry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, SpeechEntry{ID: string(kv.Key[len(prefix):]), Text: string(kv.Value)})
	}
	return out, nil
}

// AckSpeech records that of a queued text only remaining is left to speak
// ("" deletes the entry: all of it was spoken), if the entry still holds
// prev. It never creates an entry and never undoes a later change: an
// entry cleared by an interrupt or by the session's end, or moved on by
// another worker, stays as it is, and ok is false.
func (s *Store) AckSpeech(ctx context.Context, sessionID, speechID, prev, remaining string) (ok bool, err error) {
	key := s.keys.Speech(sessionID, speechID)
	op := clientv3.OpDelete(key)
	if remaining != "" {
		op = clientv3.OpPut(key, remaining)
	}
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(key), "=", prev)).Then(op).Commit()
	if err != nil {
		return false, fmt.Errorf("ack speech %s of %s: %w", speechID, sessionID, err)
	}
	return resp.Succeeded, nil
}

// DeleteSpeech removes one queued text (one the worker never accepted).
func (s *Store) DeleteSpeech(ctx context.Context, sessionID, speechID string) error {
	if _, err := s.cli.Delete(ctx, s.keys.Speech(sessionID, speechID)); err != nil {
		return fmt.Errorf("delete speech %s of %s: %w", speechID, sessionID, err)
	}
	return nil
}

// ClearSpeech empties a session's speech queue (an interrupt).
func (s *Store) ClearSpeech(ctx context.Context, sessionID string) error {
	if _, err := s.cli.Txn(ctx).Then(s.clearSpeechOp(sessionID)).Commit(); err != nil {
		return fmt.Errorf("clear speech of %s: %w", sessionID, err)
	}
	return nil
}

// clearSpeechOp deletes a session's speech queue; every transaction that
// ends or removes a session includes it, so no speech outlives its session.
func (s *Store) clearSpeechOp(sessionID string) clientv3.Op {
	return clientv3.OpDelete(s.keys.SessionSpeech(sessionID), clientv3.WithPrefix())
}
