package recording

import "testing"

// TestSharedNamesTheBucket: workers given the same bucket and prefix name
// it alike, however the endpoint is spelled; another server, bucket or
// prefix is another store; a directory is nobody else's.
func TestSharedNamesTheBucket(t *testing.T) {
	base := S3Options{Endpoint: "https://S3.Example:443", Bucket: "recs", Prefix: "fleet", AccessKey: "a", SecretKey: "b"}
	tests := []struct {
		name string
		edit func(o *S3Options)
		want string
	}{
		{"as given", func(*S3Options) {}, "s3://s3.example/recs/fleet"},
		{"default port left out", func(o *S3Options) { o.Endpoint = "https://s3.example" }, "s3://s3.example/recs/fleet"},
		{"a trailing slash", func(o *S3Options) { o.Endpoint = "https://s3.example/" }, "s3://s3.example/recs/fleet"},
		{"credentials and region do not count", func(o *S3Options) { o.AccessKey, o.SecretKey, o.Region = "", "", "eu" }, "s3://s3.example/recs/fleet"},
		{"another port", func(o *S3Options) { o.Endpoint = "http://s3.example:9000" }, "s3://s3.example:9000/recs/fleet"},
		{"no prefix", func(o *S3Options) { o.Prefix = "" }, "s3://s3.example/recs"},
		{"another bucket", func(o *S3Options) { o.Bucket = "other" }, "s3://s3.example/other/fleet"},
		{"invalid options name nothing", func(o *S3Options) { o.Endpoint = "ftp://x" }, ""},
	}
	for _, tt := range tests {
		o := base
		tt.edit(&o)
		if got := o.Shared(); got != tt.want {
			t.Errorf("%s: Shared() = %q, want %q", tt.name, got, tt.want)
		}
	}
	d, err := NewDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Shared(); got != "" {
		t.Errorf("a directory store is shared as %q", got)
	}
}
