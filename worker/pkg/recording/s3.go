package recording

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// DefaultPartSize is the S3 multipart part size: an upload holds up to two
// parts in memory, and with S3's 10,000 parts an object is at most 80 GiB.
const DefaultPartSize = 8 << 20

// S3Options configures an S3Store.
type S3Options struct {
	// Endpoint is the server's URL: http:// or https://host[:port].
	Endpoint string
	// Bucket must exist; Prefix, if set, is put before object names.
	Bucket, Prefix string
	// Region, if the server needs one.
	Region string
	// AccessKey and SecretKey sign the requests (static credentials).
	AccessKey, SecretKey string
	// PartSize of multipart uploads; 0 means DefaultPartSize.
	PartSize uint64
	// Transport, if set, carries the requests (custom CAs, tests).
	Transport http.RoundTripper
}

// Validate checks the options.
func (o *S3Options) Validate() error {
	u, err := url.Parse(o.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("recording: S3 endpoint %q: want http(s)://host[:port]", o.Endpoint)
	}
	if o.Bucket == "" {
		return errors.New("recording: S3 store: no bucket")
	}
	if o.Prefix != "" && ValidName(o.Prefix) != nil {
		return fmt.Errorf("recording: S3 prefix %q: want one or two path elements of [a-zA-Z0-9_.-]", o.Prefix)
	}
	if (o.AccessKey == "") != (o.SecretKey == "") {
		return errors.New("recording: S3 store: access key and secret key go together")
	}
	if o.PartSize != 0 && (o.PartSize < 5<<20 || o.PartSize > 5<<30) {
		return fmt.Errorf("recording: S3 part size %d: want 5 MiB..5 GiB", o.PartSize)
	}
	return nil
}

// S3Store keeps recordings in a bucket of an S3-compatible server. A
// recording streams to the server as a multipart upload while it is
// written, its first part held back so the header can be completed (see
// s3Object); the object appears when the upload completes, on Commit.
type S3Store struct {
	c   *minio.Client
	opt S3Options
}

// NewS3Store connects to the server and checks the bucket exists.
func NewS3Store(ctx context.Context, opt S3Options) (*S3Store, error) {
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	if opt.PartSize == 0 {
		opt.PartSize = DefaultPartSize
	}
	u, _ := url.Parse(opt.Endpoint)
	mo := &minio.Options{Secure: u.Scheme == "https", Region: opt.Region, Transport: opt.Transport}
	if opt.AccessKey != "" {
		mo.Creds = credentials.NewStaticV4(opt.AccessKey, opt.SecretKey, "")
	}
	c, err := minio.New(u.Host, mo)
	if err != nil {
		return nil, fmt.Errorf("recording: S3 client for %s: %w", opt.Endpoint, err)
	}
	ok, err := c.BucketExists(ctx, opt.Bucket)
	if err != nil {
		return nil, fmt.Errorf("recording: S3 bucket %s at %s: %w", opt.Bucket, opt.Endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("recording: S3 bucket %s does not exist at %s", opt.Bucket, opt.Endpoint)
	}
	return &S3Store{c: c, opt: opt}, nil
}

// String implements Store.
func (s *S3Store) String() string { return "s3:" + s.opt.Bucket + "/" + s.opt.Prefix }

// Shared implements Store.
func (s *S3Store) Shared() string { return s.opt.Shared() }

// Shared names the bucket and prefix the options point to, the same for
// every worker given them (the endpoint's host in lower case, without the
// scheme's default port): s3://host[:port]/bucket[/prefix]. Credentials and region
// do not change what is stored, so they are left out. Options that do not
// validate name nothing.
func (o *S3Options) Shared() string {
	if o.Validate() != nil {
		return ""
	}
	u, _ := url.Parse(o.Endpoint)
	host := strings.ToLower(u.Host)
	if p := u.Port(); (u.Scheme == "http" && p == "80") || (u.Scheme == "https" && p == "443") {
		host = strings.ToLower(u.Hostname())
	}
	out := "s3://" + host + "/" + o.Bucket
	if o.Prefix != "" {
		out += "/" + o.Prefix
	}
	return out
}

// Key is the object key of name.
func (s *S3Store) Key(name string) string {
	if s.opt.Prefix == "" {
		return name
	}
	return path.Join(s.opt.Prefix, name)
}

// Create implements Store: it begins an object that lives until Commit or
// Abort (not ctx's end: a recording outlives the request that started it).
func (s *S3Store) Create(ctx context.Context, name string) (Object, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	return &s3Object{s: s, core: minio.Core{Client: s.c}, key: s.Key(name), ctx: context.WithoutCancel(ctx),
		part: int(s.opt.PartSize)}, nil
}

// Open implements Store.
func (s *S3Store) Open(ctx context.Context, name string) (io.ReadCloser, int64, error) {
	if err := ValidName(name); err != nil {
		return nil, 0, err
	}
	key := s.Key(name)
	st, err := s.c.StatObject(ctx, s.opt.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		if minio.ToErrorResponse(err).Code == minio.NoSuchKey || minio.ToErrorResponse(err).StatusCode == http.StatusNotFound {
			return nil, 0, fmt.Errorf("open %s: %w", key, ErrNotFound)
		}
		return nil, 0, fmt.Errorf("recording: stat %s: %w", key, err)
	}
	obj, err := s.c.GetObject(ctx, s.opt.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, 0, fmt.Errorf("recording: get %s: %w", key, err)
	}
	return obj, st.Size, nil
}

// s3Object is an upload in progress. The first part is held in memory
// until Commit and uploaded last (a multipart upload's parts may arrive in
// any order), so the muxer can still write its header there: the duration
// and the seek index (WriteAt). Later parts stream to the server as a
// multipart upload (started when the second part is full; Write blocks
// while a part is sent); a recording that fits in one part is one
// PutObject on Commit. It holds at most two parts in memory.
type s3Object struct {
	s    *S3Store
	core minio.Core
	key  string
	ctx  context.Context // the uploads' (the recording's life)
	part int             // part size

	mu       sync.Mutex // the muxer writes; the Recorder commits or aborts
	head     []byte     // the first part: held until Commit
	cur      []byte     // the part being filled (after head)
	curStart int64      // its offset in the file
	uploadID string     // the multipart upload, once a later part was sent
	parts    []minio.CompletePart
}

func (o *s3Object) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for len(p) > 0 {
		if len(o.head) < o.part {
			k := min(len(p), o.part-len(o.head))
			o.head = append(o.head, p[:k]...)
			p, n = p[k:], n+k
			o.curStart = int64(len(o.head))
			continue
		}
		k := min(len(p), o.part-len(o.cur))
		o.cur = append(o.cur, p[:k]...)
		p, n = p[k:], n+k
		if len(o.cur) == o.part {
			if err := o.send(o.ctx, o.cur); err != nil {
				return n, err
			}
			o.curStart += int64(len(o.cur))
			o.cur = o.cur[:0]
		}
	}
	return n, nil
}

// WriteAt rewrites bytes written already, in the held first part or the
// part being filled (the muxer's header and its last cluster's size).
func (o *s3Object) WriteAt(p []byte, off int64) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	end := off + int64(len(p))
	switch {
	case off >= 0 && end <= int64(len(o.head)):
		return copy(o.head[off:], p), nil
	case off >= o.curStart && end <= o.curStart+int64(len(o.cur)):
		return copy(o.cur[off-o.curStart:], p), nil
	}
	return 0, fmt.Errorf("recording: %s: rewrite of bytes %d..%d, already uploaded", o.key, off, end)
}

// send uploads data as the next part after the first (part 2, 3, …).
func (o *s3Object) send(ctx context.Context, data []byte) error {
	if o.uploadID == "" {
		id, err := o.core.NewMultipartUpload(ctx, o.s.opt.Bucket, o.key, minio.PutObjectOptions{ContentType: "video/webm"})
		if err != nil {
			return fmt.Errorf("recording: upload %s: %w", o.key, err)
		}
		o.uploadID = id
	}
	n := len(o.parts) + 2
	p, err := o.core.PutObjectPart(ctx, o.s.opt.Bucket, o.key, o.uploadID, n, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{})
	if err != nil {
		return fmt.Errorf("recording: upload %s part %d: %w", o.key, n, err)
	}
	o.parts = append(o.parts, minio.CompletePart{PartNumber: n, ETag: p.ETag})
	return nil
}

func (o *s3Object) Commit(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.uploadID == "" {
		// One part: a plain upload.
		_, err := o.s.c.PutObject(ctx, o.s.opt.Bucket, o.key, bytes.NewReader(o.head), int64(len(o.head)),
			minio.PutObjectOptions{ContentType: "video/webm"})
		if err != nil {
			return fmt.Errorf("recording: commit %s: %w", o.key, err)
		}
		return nil
	}
	if len(o.cur) > 0 {
		if err := o.send(ctx, o.cur); err != nil {
			o.abort()
			return err
		}
	}
	first, err := o.core.PutObjectPart(ctx, o.s.opt.Bucket, o.key, o.uploadID, 1, bytes.NewReader(o.head), int64(len(o.head)), minio.PutObjectPartOptions{})
	if err != nil {
		o.abort()
		return fmt.Errorf("recording: upload %s part 1: %w", o.key, err)
	}
	parts := append([]minio.CompletePart{{PartNumber: 1, ETag: first.ETag}}, o.parts...)
	if _, err := o.core.CompleteMultipartUpload(ctx, o.s.opt.Bucket, o.key, o.uploadID, parts, minio.PutObjectOptions{}); err != nil {
		o.abort()
		return fmt.Errorf("recording: commit %s: %w", o.key, err)
	}
	return nil
}

// Abort drops the upload (the server discards the parts it has).
func (o *s3Object) Abort() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.abort()
}

func (o *s3Object) abort() {
	if o.uploadID != "" {
		ctx, cancel := context.WithTimeout(o.ctx, abortTimeout)
		defer cancel()
		_ = o.core.AbortMultipartUpload(ctx, o.s.opt.Bucket, o.key, o.uploadID)
		o.uploadID = ""
	}
	o.head, o.cur = nil, nil
}

// abortTimeout bounds an abort's request.
const abortTimeout = 30 * time.Second
