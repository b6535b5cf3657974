// Package datastorage is an offline, source-compatible stand-in for
// schneider.vip/retryspool/storage/data v0.0.3, used only to build and test
// pgtenant on machines that cannot download the real module. It declares
// exactly the API of v0.0.3 and nothing else; consumers of pgtenant resolve
// the real module, because replace directives apply only in the main module.
package datastorage

import (
	"context"
	"errors"
	"io"
)

// ErrDataNotFound is returned when message data does not exist.
var ErrDataNotFound = errors.New("message data not found")

// Backend stores and retrieves message bodies.
type Backend interface {
	// StoreData stores the body read from data under messageID and returns
	// the number of bytes stored.
	StoreData(ctx context.Context, messageID string, data io.Reader) (int64, error)
	// GetDataReader returns a reader over the body stored under messageID.
	GetDataReader(ctx context.Context, messageID string) (io.ReadCloser, error)
	// GetDataWriter returns a writer that stores a body under messageID on Close.
	GetDataWriter(ctx context.Context, messageID string) (io.WriteCloser, error)
	// DeleteData removes the body stored under messageID.
	DeleteData(ctx context.Context, messageID string) error
	// Close releases the backend's resources.
	Close() error
}

// Factory creates Backends.
type Factory interface {
	// Create returns a new Backend.
	Create() (Backend, error)
	// Name names the kind of backend.
	Name() string
}
