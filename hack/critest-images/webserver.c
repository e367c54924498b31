/*
 * Stand-in for the nginx and httpd images that critest runs: a tiny HTTP
 * server answering every request with 200 and a short page. What it imitates
 * depends on the name it is started as:
 *
 *   nginx             shows as "nginx: master process nginx -g daemon off;"
 *                     (critest greps /proc/1/cmdline for "master process"
 *                     and runs "pidof nginx") and writes /var/run/nginx.pid;
 *   httpd-foreground  prints apache's AH00558 and AH00094 start-up lines on stderr
 *                     (critest looks for "httpd" in the container log).
 *
 * It listens on all IPv4 addresses, port $LISTEN_PORT (default 80).
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static const char nginx_title[] = "nginx: master process nginx -g daemon off;";
static const char page[] = "<html><body>wharf test web server</body></html>\n";

static void stop(int sig)
{
	(void)sig;
	_exit(0);
}

static int listen_on(int port)
{
	int one = 1;
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port),
				   .sin_addr.s_addr = htonl(INADDR_ANY)};
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 64) < 0) {
		perror("listen");
		exit(1);
	}
	return fd;
}

/* Reads the request head (up to the blank line) and answers 200 to anything. */
static void serve(int client)
{
	char request[4096], response[256];
	size_t used = 0;
	ssize_t n;
	struct timeval timeout = {.tv_sec = 5};

	setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
	while (used < sizeof(request) - 1 &&
	       (n = read(client, request + used, sizeof(request) - 1 - used)) > 0) {
		used += n;
		request[used] = '\0';
		if (strstr(request, "\r\n\r\n") || strstr(request, "\n\n"))
			break;
	}
	n = snprintf(response, sizeof(response),
		     "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %zu\r\n"
		     "Connection: close\r\n\r\n",
		     strlen(page));
	if (write(client, response, n) == n)
		(void)!write(client, page, strlen(page));
}

int main(int argc, char **argv)
{
	const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	const char *port = getenv("LISTEN_PORT");
	int server;

	(void)argc;
	if (strcmp(name, "nginx") == 0) {
		/* Re-exec with the title as the whole command line, the way nginx's
		 * master looks; the pid stays the same. */
		char *title_argv[] = {(char *)nginx_title, NULL};
		execv("/proc/self/exe", title_argv);
		perror("execv /proc/self/exe");
		return 1;
	}
	if (strcmp(argv[0], nginx_title) == 0) {
		FILE *pid_file;

		/* exec named us "exe" after /proc/self/exe; pidof looks for "nginx". */
		prctl(PR_SET_NAME, "nginx");
		pid_file = fopen("/var/run/nginx.pid", "w");
		if (!pid_file || fprintf(pid_file, "%d\n", getpid()) < 0 || fclose(pid_file)) {
			perror("/var/run/nginx.pid");
			return 1;
		}
	} else if (strcmp(name, "httpd-foreground") == 0) {
		fprintf(stderr, "AH00558: httpd: Could not reliably determine the server's fully "
				"qualified domain name, using 127.0.0.1. Set the 'ServerName' "
				"directive globally to suppress this message\n");
		/* Older critest releases look for the command line apache logs. */
		fprintf(stderr, "AH00094: Command line: 'httpd -D FOREGROUND'\n");
	}

	/* As pid 1, signals without a handler are ignored: stop on them. */
	signal(SIGTERM, stop);
	signal(SIGINT, stop);
	signal(SIGQUIT, stop);
	signal(SIGPIPE, SIG_IGN);

	server = listen_on(port ? atoi(port) : 80);
	for (;;) {
		int client = accept(server, NULL, NULL);

		if (client < 0)
			continue;
		serve(client);
		close(client);
	}
}
