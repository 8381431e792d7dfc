package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

// The lab's own HTTP API (/sendense/...), behind the lab login (see handler).

type apiError struct {
	code int
	msg  string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...interface{}) error {
	return &apiError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func intParam(r *http.Request, name string) (int64, error) {
	v, err := strconv.ParseInt(r.URL.Query().Get(name), 10, 64)
	if err != nil {
		return 0, badRequest("parameter %s must be an integer", name)
	}
	return v, nil
}

// serveAPI answers POST /sendense/{write,reset,resize,add-disk,quiesce-fault}?vm=NAME|MOREF&... and
// POST /sendense/refuse-create-vm?reason=TEXT (an empty reason ends the refusal).
func (l *Lab) serveAPI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	var result map[string]interface{}
	if r.URL.Path == "/sendense/refuse-create-vm" {
		l.mu.Lock()
		l.refuseCreate = r.URL.Query().Get("reason")
		l.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]interface{}{"refuse_create_vm": l.createRefusal()})
		return
	}
	vm, err := l.findVM(r.URL.Query().Get("vm"))
	if err != nil {
		err = &apiError{http.StatusNotFound, err.Error()}
	} else {
		simulator.Map.WithLock(vm, func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			switch strings.TrimPrefix(r.URL.Path, "/sendense/") {
			case "write":
				result, err = l.write(vm, r)
			case "reset":
				result, err = l.reset(vm, r)
			case "resize":
				result, err = l.resize(vm, r)
			case "add-disk":
				result, err = l.addDisk(vm, r)
			case "quiesce-fault":
				on := r.URL.Query().Get("enabled") != "0"
				l.vms[vm.Self.Value].quiesceFault = on
				result = map[string]interface{}{"vm": vm.Self.Value, "quiesce_fault": on}
			default:
				err = &apiError{http.StatusNotFound, "unknown lab call " + r.URL.Path}
			}
		})
	}
	if err != nil {
		code := http.StatusInternalServerError
		if ae, ok := err.(*apiError); ok {
			code = ae.code
		}
		http.Error(w, err.Error(), code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(result)
}

func (l *Lab) disk(vm *simulator.VirtualMachine, r *http.Request) (*diskState, int32, error) {
	key, err := intParam(r, "disk")
	if err != nil {
		return nil, 0, err
	}
	d := l.disks[diskID(vm.Self, int32(key))]
	if d == nil {
		return nil, 0, badRequest("%s has no disk with key %d", vm.Name, key)
	}
	return d, int32(key), nil
}

// write puts deterministic new data (seeded by the disk's change id) into the flat file,
// or with zero=1 zeroes over it as a guest's discard or zeroing write does, and records the
// range as one change either way: a block that became zero is a change a backup must see.
func (l *Lab) write(vm *simulator.VirtualMachine, r *http.Request) (map[string]interface{}, error) {
	d, key, err := l.disk(vm, r)
	if err != nil {
		return nil, err
	}
	offset, err := intParam(r, "offset")
	if err != nil {
		return nil, err
	}
	length, err := intParam(r, "length")
	if err != nil {
		return nil, err
	}
	if offset < 0 || length <= 0 || offset+length > d.capacity {
		return nil, badRequest("range %d+%d is outside disk %d (%d bytes)", offset, length, key, d.capacity)
	}
	f, err := os.OpenFile(d.flat, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if r.URL.Query().Get("zero") == "1" {
		err = zeroRange(f, offset, length)
	} else {
		err = writeData(f, seedOf(d.changeID(), "write"), offset, length)
	}
	if err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	d.seq++
	d.changes = append(d.changes, change{d.seq, offset, length})
	l.syncChangeIDs(vm)
	return map[string]interface{}{"vm": vm.Self.Value, "disk": key, "change_id": d.changeID()}, nil
}

func writeData(f *os.File, seed, offset, length int64) error {
	buf := make([]byte, 1<<20)
	for done := int64(0); done < length; {
		n := int64(len(buf))
		if length-done < n {
			n = length - done
		}
		fillData(buf[:n], seed, offset+done)
		if _, err := f.WriteAt(buf[:n], offset+done); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// zeroRange punches a hole over the range (the file system zeroes the partial blocks at
// its ends), so that a backup meets a hole inside a changed area; where punching is not
// supported it writes zeroes.
func zeroRange(f *os.File, offset, length int64) error {
	const punchHole, keepSize = 0x02, 0x01
	err := syscall.Fallocate(int(f.Fd()), punchHole|keepSize, offset, length)
	if err != syscall.EOPNOTSUPP {
		return err
	}
	zero := make([]byte, 1<<20)
	for done := int64(0); done < length; {
		n := int64(len(zero))
		if length-done < n {
			n = length - done
		}
		if _, err := f.WriteAt(zero[:n], offset+done); err != nil {
			return err
		}
		done += n
	}
	return nil
}

// reset starts a new change tracking epoch for the disk, as ESX does after some events
// (a disk resize, a restore): old change ids no longer apply.
func (l *Lab) reset(vm *simulator.VirtualMachine, r *http.Request) (map[string]interface{}, error) {
	d, key, err := l.disk(vm, r)
	if err != nil {
		return nil, err
	}
	d.reset()
	l.syncChangeIDs(vm)
	return map[string]interface{}{"vm": vm.Self.Value, "disk": key, "change_id": d.changeID()}, nil
}
