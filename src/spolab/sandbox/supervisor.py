"""The supervisor: the trusted few lines that start, watch and clean up after the untrusted program.

``SUPERVISOR`` is run by a fresh ``python -I -S`` (inside bwrap, or directly in the fallback). It
forks the program (rlimits, own process group, unprivileged uid when configured, exec), waits for
it, then kills every remaining descendant: it is a child subreaper, so double-forked daemons are
re-parented to it. It reports on a status pipe that the program never holds (close-on-exec):
``{"event": "start"}``, ``{"event": "exit", ...}`` or ``{"event": "error", "msg": ...}``. SIGTERM
from the parent means stop now (timeout, output cap).
"""

SUPERVISOR = r"""
import json, os, signal, sys, time
cfg = json.loads(sys.argv[1])
FD = cfg["status_fd"]

def send(**msg):
    try:
        os.write(FD, (json.dumps(msg) + "\n").encode())
    except OSError:
        pass

class Stop(BaseException):
    pass

def on_term(signum, frame):
    raise Stop()

def descendants(root):
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/" + name + "/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), ()):
            out.append(c)
            todo.append(c)
    return out

def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True

def kill_tree():
    me, deadline = os.getpid(), time.monotonic() + 5.0
    while time.monotonic() < deadline:
        has_children = reap()
        pids = descendants(me)
        if not pids and not has_children:
            return True
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.002)
    return False

try:
    import ctypes, resource
    libc = ctypes.CDLL(None, use_errno=True)
    signal.signal(signal.SIGTERM, on_term)
    if cfg["pdeathsig"]:
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG: the parent died -> clean up
        if os.getppid() != cfg["ppid"]:
            os._exit(0)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    if cfg["unshare_net"] == "root" and libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
    if cfg["unshare_net"] == "user":  # not root: a user namespace (same uid) owning a new netns
        uid, gid = os.getuid(), os.getgid()
        if libc.unshare(0x10000000 | 0x40000000) != 0:  # CLONE_NEWUSER | CLONE_NEWNET
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER | CLONE_NEWNET) failed")
        for name, text in (("setgroups", "deny"), ("uid_map", "%d %d 1" % (uid, uid)), ("gid_map", "%d %d 1" % (gid, gid))):
            with open("/proc/self/" + name, "w") as f:
                f.write(text)
    limits = [(getattr(resource, n), s, h) for n, s, h in cfg["rlimits"]]
    pid = os.fork()
except BaseException as e:
    send(event="error", msg="supervisor setup: %s: %s" % (type(e).__name__, e))
    os._exit(0)

if pid == 0:
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.setpgid(0, 0)
        for res, soft, hard in limits:
            resource.setrlimit(res, (soft, hard))
        os.umask(0o077)
        uid = cfg["uid"]
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        os.chdir(cfg["cwd"])
        os.set_inheritable(FD, False)
        os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
    except BaseException as e:
        send(event="error", msg="program setup: %s: %s" % (type(e).__name__, e))
    os._exit(127)

status = rusage = None
stopped = False
try:
    send(event="start", pid=pid)
    while True:
        try:
            p, st, ru = os.wait4(-1, 0)
        except ChildProcessError:
            break
        if p == pid:
            status, rusage = st, ru
            break
except Stop:
    stopped = True
signal.signal(signal.SIGTERM, signal.SIG_IGN)
msg = {"event": "exit", "stopped": stopped, "clean": kill_tree()}
if status is not None:
    if os.WIFSIGNALED(status):
        msg["signal"] = os.WTERMSIG(status)
    else:
        msg["returncode"] = os.waitstatus_to_exitcode(status)
    msg["cpu_s"] = rusage.ru_utime + rusage.ru_stime
send(**msg)
os._exit(0)
"""
