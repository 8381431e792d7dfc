package main

import (
	"os"
	"path/filepath"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// Snapshot files. vcsim removes a snapshot's .vmsn by its file key in layoutEx, but it
// renumbers every file key whenever it refreshes the VM's storage info (its check that a
// file still exists never matches), so a snapshot's key comes to name another file: a
// disk's descriptor or flat extent was deleted with the snapshot. The lab takes the
// files out of vcsim's hands: it notes each snapshot's .vmsn when the snapshot is made,
// gives vcsim no file to remove, and removes the .vmsn of the snapshots that are gone.

// vmsnFiles lists the .vmsn files in the VM's snapshot folder.
func vmsnFiles(vm *simulator.VirtualMachine) map[string]bool {
	files := map[string]bool{}
	dir := vm.Config.Files.SnapshotDirectory
	if dir == "" {
		return files
	}
	local, err := datastoreFile(vm, dir)
	if err != nil {
		return files
	}
	matches, _ := filepath.Glob(filepath.Join(local, "*.vmsn"))
	for _, m := range matches {
		files[m] = true
	}
	return files
}

// snapshotFilesBefore is called before CreateSnapshot_Task: the .vmsn files already there.
func (l *Lab) snapshotFilesBefore(ref string) map[string]bool {
	vm, err := l.findVM(ref)
	if err != nil {
		return nil
	}
	var files map[string]bool
	simulator.Map.WithLock(vm, func() { files = vmsnFiles(vm) })
	return files
}

// noteSnapshotFile records the .vmsn the snapshot just made added.
func (l *Lab) noteSnapshotFile(ref string, before map[string]bool) {
	vm, err := l.findVM(ref)
	if err != nil || before == nil {
		return
	}
	simulator.Map.WithLock(vm, func() {
		if vm.Snapshot == nil || vm.Snapshot.CurrentSnapshot == nil {
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		for file := range vmsnFiles(vm) {
			if !before[file] {
				l.snapFiles[vm.Snapshot.CurrentSnapshot.Value] = file
			}
		}
	})
}

// keepFiles is called before a snapshot removal: vcsim's file keys of the VM's snapshots
// are made to name no file, so that it deletes none.
func (l *Lab) keepFiles(ref string) {
	vm, err := l.findVM(ref)
	if err != nil {
		return
	}
	simulator.Map.WithLock(vm, func() {
		if vm.LayoutEx == nil {
			return
		}
		for i := range vm.LayoutEx.Snapshot {
			vm.LayoutEx.Snapshot[i].DataKey = -1
			vm.LayoutEx.Snapshot[i].MemoryKey = -1
		}
	})
}

// removeGoneSnapshotFiles deletes the .vmsn of every snapshot that no longer exists.
func (l *Lab) removeGoneSnapshotFiles() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for snap, file := range l.snapFiles {
		ref := types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: snap}
		if simulator.Map.Get(ref) == nil {
			_ = os.Remove(file)
			delete(l.snapFiles, snap)
		}
	}
}
