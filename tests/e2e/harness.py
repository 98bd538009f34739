"""Process and protocol helpers for the sluice end-to-end suite, gathered
from their modules (processes, sluice_node, http_api, records, kafka_wire)
so that a test imports them from one place.

Everything here drives real processes on 127.0.0.1:

* ``EtcdServer``   -- a single-member etcd (Debian ``etcd-server``) on free ports.
* ``MotoS3``       -- ``moto_server`` (moto[server]) as the S3-compatible store.
* ``FaultProxy``   -- a TCP forwarder in front of moto that can be stopped and
                      started again on the same port (see its docstring).
* ``Sluice``       -- one ``sluice serve`` process (distributed or embedded).
* ``Api``          -- a thin ``requests`` client for sluice's HTTP API.
* ``Rec`` / ``ProduceLog`` / ``produce_worker`` / ``verify_log`` -- the
  bookkeeping that lets every test state precisely what was sent, what was
  acknowledged at which offset, what failed, and what is unknown (the client
  never got an answer), and then check a read-back against it.

Child processes get ``PR_SET_PDEATHSIG=SIGKILL`` so that nothing outlives a
crashed or killed pytest.  Linux delivers that signal when the *thread* that
forked the child exits, so start processes from the test's main thread only.
"""

# ruff: noqa: F401,F403
from http_api import *
from kafka_wire import *
from processes import *
from records import *
from sluice_node import *
