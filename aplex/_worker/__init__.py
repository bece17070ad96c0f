"""The worker side: what runs inside a worker thread or process.

Nothing here imports the front end (executors, futures, the dispatcher, the
load balancers), so a worker process, and the fork server that forks them,
load only these modules, the backend in use and AnyIO:

* :mod:`.serve`: the loop inside every worker, written once on AnyIO;
* :mod:`.process`: a worker process's entry point and its end of the pipe;
* :mod:`.messages`: the records that travel between parent and worker;
* :mod:`.pickling`: how they cross a process boundary.
"""
