/* A sandbox "pause" process for the lifecycle benchmark's containerd pods,
 * like Kubernetes' build/pause/linux/pause.c: sleep until SIGINT or SIGTERM,
 * reaping any child that ends meanwhile (it is the pod's PID 1 when the pod
 * shares a PID namespace). Built static: the image holds nothing else. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void leave(int signal) { _exit(128 + signal); }

static void reap(int signal) {
	(void)signal;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
}

int main(void) {
	struct sigaction exit_action = {.sa_handler = leave};
	struct sigaction child_action = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
	if (sigaction(SIGINT, &exit_action, NULL) < 0 || sigaction(SIGTERM, &exit_action, NULL) < 0 ||
	    sigaction(SIGCHLD, &child_action, NULL) < 0)
		return 1;
	for (;;)
		pause();
}
