package recording

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"sync"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// DefaultPartSize is the S3 multipart part size: the memory one upload
// buffers, and with S3's 10,000 parts a bound of 80 GiB on an object.
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
// written (one part buffered in memory); the object appears when the
// upload completes, on Commit.
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

// Key is the object key of name.
func (s *S3Store) Key(name string) string {
	if s.opt.Prefix == "" {
		return name
	}
	return path.Join(s.opt.Prefix, name)
}

// Create implements Store: it starts the upload, which lives until Commit
// or Abort (not ctx's end: a recording outlives the request that started
// it).
func (s *S3Store) Create(ctx context.Context, name string) (Object, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	o := &s3Object{pw: pw, done: make(chan struct{}), key: s.Key(name)}
	up := context.WithoutCancel(ctx)
	go func() {
		defer close(o.done)
		_, err := s.c.PutObject(up, s.opt.Bucket, o.key, pr, -1,
			minio.PutObjectOptions{ContentType: "video/webm", PartSize: s.opt.PartSize})
		if err != nil {
			err = fmt.Errorf("recording: upload %s: %w", o.key, err)
			o.setErr(err)
		}
		// Unblocks a writer if the upload ended early.
		_ = pr.CloseWithError(errors.Join(err, io.ErrClosedPipe))
	}()
	return o, nil
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

// s3Object is an upload in progress: Write feeds the uploader through a
// pipe (blocking while a part is being sent).
type s3Object struct {
	key  string
	pw   *io.PipeWriter
	done chan struct{} // the uploader goroutine has returned
	mu   sync.Mutex
	err  error
}

func (o *s3Object) setErr(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.err = err
}

func (o *s3Object) Write(p []byte) (int, error) { return o.pw.Write(p) }

// errAborted ends an aborted upload (the client then aborts the multipart
// upload on the server).
var errAborted = errors.New("recording: upload aborted")

func (o *s3Object) Commit(ctx context.Context) error {
	_ = o.pw.Close()
	select {
	case <-o.done:
	case <-ctx.Done():
		_ = o.pw.CloseWithError(errAborted)
		<-o.done
		return fmt.Errorf("recording: commit %s: %w", o.key, ctx.Err())
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

func (o *s3Object) Abort() {
	_ = o.pw.CloseWithError(errAborted)
	<-o.done
}
