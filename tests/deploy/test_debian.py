"""The Debian packages (debian/, `make deb`): lintian, what each package
holds, the library's symbols file, and the three packages installed on a
clean Debian 12 with the server started by systemd from its unit.

The clean system is a minbase bookworm that mmdebstrap bootstraps (plus
systemd, curl and a C compiler: the tools of the checks, not of the
packages), cached as a tarball under BAZAAR_DEB_CACHE (default
/var/cache/bazaar-debian) keyed by the date and that package list, and
rebuilt when absent.  Each run unpacks a fresh copy, resolves the packages'
dependencies from Debian's archive (apt-get in a chroot, the only step
that needs the network), then boots it with systemd-nspawn: real systemd as
PID 1 in the container, no network but its own loopback, so the unit's
default ports cannot meet another developer's server.  Inside, apt-get
installs the three .debs (their maintainer scripts enable and start
bazaar.service), curl checks /healthz and /readyz on the default port, the
unit's user, state directory and sd_notify readiness are checked, a
program is built with `cc hello.c $(pkg-config --cflags --libs bazaar)`
against libbazaar-dev and run, an upgrade (the same package repacked under
a higher version) keeps an edited /etc/default/bazaar and restarts the
server with it, and purging the package stops the service.

Run by `make test-debian` (root), which builds the packages first and
points BAZAAR_DEB_DIR at them; without BAZAAR_DEB_DIR the module is
skipped with that reason (it is not part of `make test-deploy`)."""
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEB_DIR = os.environ.get("BAZAAR_DEB_DIR")
CACHE = os.environ.get("BAZAAR_DEB_CACHE", "/var/cache/bazaar-debian")
SUITE = "bookworm"
MIRRORS = ["deb http://deb.debian.org/debian bookworm main",
           "deb http://deb.debian.org/debian bookworm-updates main",
           "deb http://deb.debian.org/debian-security bookworm-security main"]
# The checks' tools, not the packages' dependencies (those come from the
# .debs' Depends, resolved by apt in the test).
BASE_PKGS = ["systemd", "systemd-sysv", "curl", "gcc", "libc6-dev", "pkg-config"]
PACKAGES = ("bazaar", "libbazaar0", "libbazaar-dev")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

if not DEB_DIR:
    pytest.skip("the Debian packaging test runs from `make test-debian` (BAZAAR_DEB_DIR names the built .debs)",
                allow_module_level=True)

# Seconds per phase, printed at the end of the module (make test-debian's timing).
TIMES = {}


def run(argv, timeout, what, **kw):
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    TIMES[what] = TIMES.get(what, 0) + time.monotonic() - t0
    assert r.returncode == 0, "%s failed (%d): %s\n%s\n%s" % (what, r.returncode, " ".join(argv), r.stdout[-4000:],
                                                                 r.stderr[-4000:])
    return r.stdout


@pytest.fixture(scope="module", autouse=True)
def report_times():
    yield
    if TIMES:
        line = "test_debian times (s): " + ", ".join("%s %.1f" % kv for kv in TIMES.items())
        print("\n" + line)
        with open(os.path.join(DEB_DIR, "test-times.txt"), "w") as f:
            f.write(line + "\n")


@pytest.fixture(scope="module")
def debs():
    assert os.geteuid() == 0, "test_debian needs root (chroot, systemd-nspawn)"
    out = {}
    for p in PACKAGES:
        found = glob.glob(os.path.join(DEB_DIR, "%s_*.deb" % p))
        assert len(found) == 1, "want one %s_*.deb in %s, found %r" % (p, DEB_DIR, found)
        out[p] = found[0]
    changes = glob.glob(os.path.join(DEB_DIR, "bazaar_*.changes"))
    assert len(changes) == 1, changes
    out["changes"] = changes[0]
    return out


def deb_files(path):
    """{path: (mode string, link target or None)} of a .deb's data."""
    out = {}
    for l in subprocess.run(["dpkg-deb", "-c", path], capture_output=True, text=True, check=True).stdout.splitlines():
        f = l.split(None, 5)
        name, target = f[5], None
        if " -> " in name:
            name, target = name.split(" -> ", 1)
        out[name.lstrip(".")] = (f[0], target)
    return out


def deb_field(path, field):
    return subprocess.run(["dpkg-deb", "-f", path, field], capture_output=True, text=True,
                          check=True).stdout.strip()


def multiarch():
    return subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], capture_output=True, text=True,
                          check=True).stdout.strip()


def changelog_version():
    with open(os.path.join(ROOT, "debian", "changelog")) as f:
        return re.match(r"bazaar \(([^)]+)\)", f.readline()).group(1)


# ---- the packages as files ----------------------------------------------------


def test_lintian_gives_no_errors_and_no_unexplained_warnings(debs):
    # Every tag lintian would raise at warning level or above is either fixed
    # or overridden with a reason in debian/*.lintian-overrides; overridden
    # tags print as O: and are listed here for the record.
    out = run(["lintian", "--fail-on", "error,warning", "--pedantic", "--display-info", "--display-experimental",
               "--show-overrides", "--tag-display-limit", "0", debs["changes"]], 600, "lintian")
    tags = [l for l in out.splitlines() if re.match(r"^[A-Z]: ", l)]
    assert not [t for t in tags if t[0] in "EW"], out
    print("\nlintian: no errors, no warnings; the rest:\n" + "\n".join(tags))


def test_bazaar_holds_the_server_unit_man_page_and_env_file(debs, tmp_path):
    files = {k: v for k, v in deb_files(debs["bazaar"]).items() if not k.endswith("/")}
    want = {"/usr/bin/bazaar", "/usr/share/man/man1/bazaar.1.gz", "/lib/systemd/system/bazaar.service",
            "/etc/default/bazaar", "/usr/share/doc/bazaar/copyright", "/usr/share/doc/bazaar/changelog.gz",
            "/usr/share/lintian/overrides/bazaar"}
    assert set(files) == want, sorted(files)
    assert files["/usr/bin/bazaar"][0] == "-rwxr-xr-x"
    # /etc/default/bazaar is a conffile: an operator's edits survive upgrades
    ctrl = subprocess.run(["dpkg-deb", "--info", debs["bazaar"], "conffiles"], capture_output=True, text=True,
                          check=True).stdout.split()
    assert ctrl == ["/etc/default/bazaar"]
    # the maintainer scripts are debhelper's systemd snippets
    for script in ("postinst", "prerm", "postrm"):
        text = subprocess.run(["dpkg-deb", "--info", debs["bazaar"], script], capture_output=True, text=True,
                              check=True).stdout
        assert "bazaar.service" in text, script
    # the version in debian/changelog is the one the packaged binary prints
    assert deb_field(debs["bazaar"], "Version") == changelog_version()
    subprocess.run(["dpkg-deb", "-x", debs["bazaar"], str(tmp_path)], check=True)
    out = subprocess.run([str(tmp_path / "usr/bin/bazaar"), "--version"], capture_output=True, text=True,
                         timeout=30).stdout
    assert out.strip() == "bazaar " + changelog_version(), out


def test_libbazaar0_holds_the_shared_library_and_its_symbols(debs, tmp_path):
    ma = multiarch()
    files = deb_files(debs["libbazaar0"])
    libs = {k: v for k, v in files.items() if k.startswith("/usr/lib/%s/" % ma) and not k.endswith("/")}
    real = [k for k, v in libs.items() if v[1] is None]
    # its real name is the package's version (<bazaar/version.h> and debian/changelog agree)
    assert real == ["/usr/lib/%s/libbazaar.so.%s" % (ma, changelog_version())], libs
    assert libs["/usr/lib/%s/libbazaar.so.0" % ma][1] == os.path.basename(real[0])
    assert set(libs) == {real[0], "/usr/lib/%s/libbazaar.so.0" % ma}
    assert deb_field(debs["libbazaar0"], "Multi-Arch") == "same"
    # the SONAME the package is named for
    subprocess.run(["dpkg-deb", "-x", debs["libbazaar0"], str(tmp_path)], check=True)
    so = str(tmp_path) + real[0]
    dyn = subprocess.run(["readelf", "-dW", so], capture_output=True, text=True, check=True).stdout
    assert "Library soname: [libbazaar.so.0]" in dyn
    # debian/libbazaar0.symbols names every exported symbol, no more, no less:
    # a new public function needs its line (with the version that added it,
    # `make deb-symbols` writes it) so a program that uses it depends on a
    # libbazaar0 that has it; one that went away is an ABI break (a new
    # SONAME and package name; dpkg-gensymbols fails the build too once the
    # changelog is past the version that added it)
    with open(os.path.join(ROOT, "debian", "libbazaar0.symbols")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "libbazaar.so.0 libbazaar0 #MINVER#", lines[0]
    listed = {l.split()[0].split("@")[0] for l in lines[1:] if l.startswith(" ")}
    nm = subprocess.run(["nm", "-D", "--defined-only", so], capture_output=True, text=True, check=True).stdout
    exported = {l.split()[2] for l in nm.splitlines() if len(l.split()) == 3}
    assert listed == exported, ("not in debian/libbazaar0.symbols (run make deb-symbols): %s; "
                                "gone from the library: %s" % (sorted(exported - listed), sorted(listed - exported)))
    # the package carries it, and a shlibs file for the packages without symbols support
    subprocess.run(["dpkg-deb", "-e", debs["libbazaar0"], str(tmp_path / "DEBIAN")], check=True)
    with open(tmp_path / "DEBIAN" / "symbols") as f:
        assert {l.split()[0].split("@")[0] for l in f if l.startswith(" ")} == exported
    with open(tmp_path / "DEBIAN" / "shlibs") as f:
        assert f.read().split()[:3] == ["libbazaar", "0", "libbazaar0"]


def test_libbazaar_dev_holds_headers_static_library_and_pc(debs):
    ma = multiarch()
    files = deb_files(debs["libbazaar-dev"])
    headers = sorted(k for k in files if k.startswith("/usr/include/bazaar/") and k.endswith(".h"))
    ours = sorted("/usr/include/bazaar/" + os.path.basename(h) for h in glob.glob(os.path.join(ROOT, "include",
                                                                                            "bazaar", "*.h")))
    assert headers == ours
    assert files["/usr/lib/%s/libbazaar.so" % ma][1].startswith("libbazaar.so.0")
    assert "/usr/lib/%s/libbazaar.a" % ma in files
    assert "/usr/lib/%s/pkgconfig/bazaar.pc" % ma in files
    dep = deb_field(debs["libbazaar-dev"], "Depends")
    assert re.search(r"libbazaar0 \(= %s\)" % re.escape(changelog_version()), dep), dep


# ---- a clean Debian with the packages installed -------------------------------


def base_tarball():
    """The bootstrapped root, from the cache or made now (under a lock, so
    two runs bootstrap once)."""
    key = hashlib.sha256(" ".join([SUITE] + MIRRORS + BASE_PKGS).encode()).hexdigest()[:10]
    today = time.strftime("%Y%m%d", time.gmtime())
    os.makedirs(CACHE, exist_ok=True)
    tar = os.path.join(CACHE, "%s-%s-%s.tar" % (SUITE, today, key))
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(tar):
            for old in glob.glob(os.path.join(CACHE, "%s-*.tar" % SUITE)):
                os.unlink(old)
            tmp = tar + ".%d.tmp" % os.getpid()
            run(["mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar", "--skip=cleanup/apt/lists",
                 "--include=" + ",".join(BASE_PKGS), SUITE, tmp] + MIRRORS, 1200,
                "bootstrap (cache was empty)")
            os.rename(tmp, tar)
    return tar


class Container:
    """systemd-nspawn booting a root: systemd as its PID 1, a private network
    (loopback only).  exec() runs a command inside through nsenter."""

    def __init__(self, root):
        self.root = root
        self.name = "bz-deb-%d" % os.getpid()
        self.log = open(os.path.join(os.path.dirname(root), "nspawn.log"), "w+")
        self.proc = subprocess.Popen(["systemd-nspawn", "--quiet", "--directory", root, "--machine", self.name,
                                      "--register=no", "--keep-unit", "--private-network", "--boot",
                                      "--console=pipe"], stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.leader = None
        end = time.monotonic() + 30
        while time.monotonic() < end and self.proc.poll() is None:
            try:
                with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                    kids = f.read().split()
                if kids and os.readlink("/proc/%s/ns/pid" % kids[0]) != os.readlink("/proc/self/ns/pid"):
                    self.leader = int(kids[0])
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert self.leader, "systemd-nspawn did not start a container: %s" % self.output()

    def output(self):
        self.log.seek(0)
        return self.log.read()[-4000:]

    def exec(self, cmd, timeout=120, check=True, what=None):
        argv = ["nsenter", "--target", str(self.leader), "--all", "--wd", "--", "env", "-i", "PATH=" + PATH,
                "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", "sh", "-c", cmd]
        t0 = time.monotonic()
        # no stdin: a question (a conffile prompt) fails instead of waiting
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        if what:
            TIMES[what] = TIMES.get(what, 0) + time.monotonic() - t0
        if check:
            assert r.returncode == 0, "in the container: %s -> %d\n%s\n%s" % (cmd, r.returncode, r.stdout[-4000:],
                                                                               r.stderr[-4000:])
        return r

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # nspawn halts the container: systemd stops every unit
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


HELLO_FALLBACK = r"""
#include <bazaar/version.h>
#include <stdio.h>
#include <string.h>
int main(void) {
    /* the header's version and the shared library's agree */
    printf("libbazaar %s\n", bazaar_version());
    return strcmp(bazaar_version(), BAZAAR_VERSION) != 0;
}
"""


@pytest.fixture(scope="module")
def system(debs):
    for tool in ("mmdebstrap", "systemd-nspawn", "nsenter", "chroot"):
        assert shutil.which(tool), "%s is missing (scripts/deps.sh test installs it)" % tool
    tar = base_tarball()
    work = tempfile.mkdtemp(prefix="bazaar-debian-")
    root = os.path.join(work, "root")
    os.mkdir(root)
    c = None
    try:
        run(["tar", "-C", root, "-xf", tar], 300, "unpack root")
        os.makedirs(os.path.join(root, "srv", "debs"))
        for p in PACKAGES:
            shutil.copy(debs[p], os.path.join(root, "srv", "debs"))
        # the dependencies from Debian's archive (the container has no network):
        # apt resolves them from the packages' Depends, downloads only
        shutil.copy("/etc/resolv.conf", os.path.join(root, "etc", "resolv.conf"))
        archives = os.path.join(CACHE, "archives")
        os.makedirs(archives, exist_ok=True)
        inroot = os.path.join(root, "var", "cache", "apt", "archives")
        for d in glob.glob(os.path.join(archives, "*.deb")):
            shutil.copy(d, inroot)
        env = {"PATH": PATH, "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
        run(["chroot", root, "apt-get", "update", "-qq"], 300, "apt-get update", env=env)
        run(["chroot", root, "apt-get", "install", "-y", "-qq", "--download-only"] +
            ["/srv/debs/" + os.path.basename(debs[p]) for p in PACKAGES], 600, "download dependencies", env=env)
        # the cache keeps what this run used (renamed into place: another
        # run may be reading it); what the archive replaced goes
        used = {os.path.basename(d) for d in glob.glob(os.path.join(inroot, "*.deb"))}
        for name in used:
            if not os.path.exists(os.path.join(archives, name)):
                tmp = os.path.join(archives, ".%s.%d" % (name, os.getpid()))
                shutil.copy(os.path.join(inroot, name), tmp)
                os.rename(tmp, os.path.join(archives, name))
        for d in glob.glob(os.path.join(archives, "*.deb")):
            if os.path.basename(d) not in used:
                os.unlink(d)
        hello = os.path.join(ROOT, "examples", "hello")
        os.makedirs(os.path.join(root, "srv", "hello"))
        if os.path.isdir(hello) and glob.glob(os.path.join(hello, "*.c")):
            for f in glob.glob(os.path.join(hello, "*.c")):
                shutil.copy(f, os.path.join(root, "srv", "hello"))
        else:
            with open(os.path.join(root, "srv", "hello", "hello.c"), "w") as f:
                f.write(HELLO_FALLBACK)
        t0 = time.monotonic()
        c = Container(root)
        # "offline" or no socket until systemd in the container opens
        # /run/systemd/private; then --wait waits for the boot to finish
        end = time.monotonic() + 60
        while True:
            r = c.exec("systemctl is-system-running --wait", timeout=120, check=False)
            if r.stdout.strip() in ("running", "degraded") or time.monotonic() > end:
                break
            time.sleep(0.2)
        TIMES["boot"] = time.monotonic() - t0
        assert r.stdout.strip() in ("running", "degraded"), r.stdout + r.stderr + c.output()
        yield c
    finally:
        if c:
            c.stop()
        subprocess.run(["rm", "-rf", "--one-file-system", work])


def test_clean_system_installs_the_packages_and_the_unit_starts(system):
    c = system
    # nothing of bazaar before: a clean system
    assert c.exec("dpkg-query -W bazaar", check=False).returncode != 0
    c.exec("apt-get install -y -qq /srv/debs/*.deb", timeout=600, what="apt-get install")
    # systemd's own parser on the installed unit, with its ExecStart present
    r = c.exec("systemd-analyze verify --man=no /lib/systemd/system/bazaar.service", check=False)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
    # the maintainer scripts enabled and started the unit; READY=1 (Type=notify)
    # came only once every listener accepts, so /healthz answers at once
    assert c.exec("systemctl is-enabled bazaar.service").stdout.strip() == "enabled"
    st = c.exec("systemctl is-active bazaar.service", check=False)
    assert st.stdout.strip() == "active", c.exec("systemctl status --no-pager -l bazaar.service; "
                                                 "journalctl --no-pager -u bazaar.service", check=False).stdout
    assert c.exec("curl -fsS http://127.0.0.1:8080/healthz").returncode == 0
    ready = c.exec("curl -sS -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/readyz").stdout
    assert ready == "200", ready
    # its user is systemd's dynamic one, its database in its state directory
    show = dict(l.split("=", 1) for l in c.exec("systemctl show bazaar.service -p MainPID -p Type -p "
                                                 "NRestarts -p StatusText -p DynamicUser").stdout.splitlines())
    assert show["Type"] == "notify" and show["DynamicUser"] == "yes" and show["NRestarts"] == "0", show
    assert show["StatusText"], show  # STATUS= of the READY=1 message
    pid = show["MainPID"]
    uid = c.exec("stat -c %%u /proc/%s" % pid).stdout.strip()
    assert 61184 <= int(uid) <= 65519, uid  # systemd's DynamicUser= range
    c.exec("test -s /var/lib/private/bazaar/bazaar.db")
    # a gRPC port too (the unit's default settings: /etc/default/bazaar untouched)
    ss = c.exec("cat /proc/net/tcp /proc/net/tcp6").stdout
    listening = {int(l.split()[1].rsplit(":", 1)[1], 16) for l in ss.splitlines()[1:]
                 if len(l.split()) > 3 and l.split()[3] == "0A"}
    assert {8080, 9090} <= listening, sorted(listening)
    # reload is SIGHUP (the TLS certificate): the server stays up
    r = c.exec("systemctl reload bazaar.service", check=False)
    assert r.returncode == 0, r.stderr + c.exec("journalctl --no-pager -n 20 -u bazaar.service", check=False).stdout
    assert c.exec("systemctl is-active bazaar.service").stdout.strip() == "active"
    assert c.exec("curl -fsS http://127.0.0.1:8080/healthz").returncode == 0


def test_a_program_builds_against_libbazaar_dev(system):
    c = system
    c.exec("dpkg-query -W libbazaar-dev || apt-get install -y -qq /srv/debs/*.deb", timeout=600)
    cflags = c.exec("pkg-config --cflags --libs bazaar").stdout.strip()
    assert "-lbazaar" in cflags, cflags
    c.exec("cd /srv/hello && cc -o hello *.c $(pkg-config --cflags --libs bazaar)", what="build hello")
    # dynamically linked against the packaged library
    ldd = c.exec("ldd /srv/hello/hello").stdout
    assert re.search(r"libbazaar\.so\.0 => (/usr)?/lib/[^/]+/libbazaar\.so\.0", ldd), ldd
    # and statically: libbazaar.a with `pkg-config --static`, which needs every
    # Requires.private module's .pc (libbazaar-dev's Depends bring them)
    c.exec("cd /srv/hello && cc -o hello-static *.c $(pkg-config --cflags bazaar) "
           "/usr/lib/$(gcc -print-multiarch)/libbazaar.a "
           "$(pkg-config --static --libs bazaar | sed 's/-lbazaar\\b//')", what="build hello")
    ldd = c.exec("ldd /srv/hello/hello-static").stdout
    assert "libbazaar" not in ldd, ldd
    if os.path.isdir(os.path.join(ROOT, "examples", "hello")):
        # examples/hello: its route and the lifecycle's /healthz, run by systemd
        # as a transient service (gRPC off: bazaar.service holds :9090)
        c.exec("systemd-run --unit=hello-test -p DynamicUser=yes /srv/hello/hello "
               "--http-addr 127.0.0.1:8181 --grpc-addr off")
        ok = c.exec("for i in $(seq 100); do curl -fsS http://127.0.0.1:8181/healthz && exit 0; sleep 0.1; done; "
                    "exit 1", check=False)
        body = c.exec("curl -fsS http://127.0.0.1:8181/hello/debian", check=False).stdout
        log = c.exec("journalctl --no-pager -u hello-test", check=False).stdout
        c.exec("systemctl stop hello-test", check=False)
        assert ok.returncode == 0, log
        assert json.loads(body) == {"message": "hello, debian"}, body + log
    else:
        out = c.exec("/srv/hello/hello").stdout
        assert out.startswith("libbazaar "), out
        out = c.exec("/srv/hello/hello-static").stdout
        assert out.startswith("libbazaar "), out


def test_an_upgrade_keeps_the_edited_env_file_and_restarts_the_server(system, debs, tmp_path):
    c = system
    c.exec("dpkg-query -W bazaar || apt-get install -y -qq /srv/debs/*.deb", timeout=600)
    # the operator moves the server to another port
    c.exec("sed -i 's/^#BAZAAR_HTTP_ADDR=.*/BAZAAR_HTTP_ADDR=127.0.0.1:8181/' /etc/default/bazaar && "
           "grep -q '^BAZAAR_HTTP_ADDR=127.0.0.1:8181$' /etc/default/bazaar && systemctl restart bazaar.service")
    c.exec("curl -fsS http://127.0.0.1:8181/healthz")
    before = c.exec("systemctl show -p MainPID --value bazaar.service").stdout.strip()
    # the next version of the package: the same files under a higher version
    # (dpkg-deb repacks the built one), its /etc/default/bazaar unchanged
    raw = tmp_path / "raw"
    subprocess.run(["dpkg-deb", "-R", debs["bazaar"], str(raw)], check=True)
    ctl = (raw / "DEBIAN" / "control").read_text()
    version = changelog_version() + "+next1"
    (raw / "DEBIAN" / "control").write_text(re.sub(r"(?m)^Version: .*$", "Version: " + version, ctl))
    up = os.path.join(c.root, "srv", "bazaar_%s_upgrade.deb" % version)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(raw), up], check=True, capture_output=True)
    c.exec("apt-get install -y -qq /srv/" + os.path.basename(up), timeout=300, what="upgrade")
    assert c.exec("dpkg-query -W -f '${Version}' bazaar").stdout == version
    # the edit survived (no prompt: the packaged file did not change), and the
    # server was restarted on the new binary with it
    c.exec("grep -q '^BAZAAR_HTTP_ADDR=127.0.0.1:8181$' /etc/default/bazaar")
    after = c.exec("systemctl show -p MainPID --value bazaar.service").stdout.strip()
    assert after not in ("0", before), (before, after)
    c.exec("curl -fsS http://127.0.0.1:8181/healthz")
    assert c.exec("curl -fsS http://127.0.0.1:8080/healthz", check=False).returncode != 0


def test_purging_stops_the_service_and_removes_its_conffile(system):
    c = system
    c.exec("dpkg-query -W bazaar || apt-get install -y -qq /srv/debs/*.deb", timeout=600)
    c.exec("systemctl is-active bazaar.service")
    c.exec("apt-get purge -y -qq bazaar", timeout=300, what="purge")
    assert c.exec("systemctl is-active bazaar.service", check=False).stdout.strip() in ("inactive", "unknown")
    for port in (8080, 8181):
        assert c.exec("curl -fsS http://127.0.0.1:%d/healthz" % port, check=False).returncode != 0
    assert c.exec("test -e /etc/default/bazaar", check=False).returncode != 0
    # the library stays for the programs built on it
    assert c.exec("dpkg-query -W -f '${Status}' libbazaar0").stdout == "install ok installed"
