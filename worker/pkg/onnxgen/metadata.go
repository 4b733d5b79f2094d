package onnxgen

import "google.golang.org/protobuf/encoding/protowire"

// Field numbers of ModelProto.metadata_props and StringStringEntryProto.
const (
	modelMetadataProps = 14
	entryKey           = 1
	entryValue         = 2
)

// Metadata is one ModelProto.metadata_props entry: ONNX Runtime reports
// them as the model's custom metadata map.
type Metadata struct {
	Key, Value string
}

// Metadata adds a metadata_props entry to the model (a key given twice is
// written twice; readers keep one).
func (b *Builder) Metadata(key, value string) {
	b.meta = append(b.meta, Metadata{Key: key, Value: value})
}

// AppendMetadata returns model (an encoded ModelProto, as DefaultModel
// gives) with a metadata_props entry appended: a repeated protobuf field
// may follow the others, so the bytes before it are kept as they are.
func AppendMetadata(model []byte, key, value string) []byte {
	out := make([]byte, len(model), len(model)+len(key)+len(value)+16)
	copy(out, model)
	return appendMetadata(out, Metadata{Key: key, Value: value})
}

func appendMetadata(b []byte, m Metadata) []byte {
	var e []byte
	e = appendStringField(e, entryKey, m.Key)
	e = appendStringField(e, entryValue, m.Value)
	return protowire.AppendBytes(protowire.AppendTag(b, modelMetadataProps, protowire.BytesType), e)
}
