package test

import "testing"

func TestSocketScenarioLocal(t *testing.T) {
	SocketScenario(t, nil, localClones)
}
