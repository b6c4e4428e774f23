package memory

import (
	"testing"

	"github.com/crier-push/crier/internal/hub"
	"github.com/crier-push/crier/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) hub.Store { return New() })
}

func BenchmarkAppendParallel64(b *testing.B) {
	s := New()
	defer s.Close()
	storetest.BenchAppendParallel(b, s, 64, 100)
}
