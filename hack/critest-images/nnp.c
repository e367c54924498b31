/*
 * Stand-in for critest's nonewprivs image. Installed setuid root: started by
 * uid 1000 it prints "Effective uid: 0", unless no_new_privs kept the setuid
 * bit from taking effect, when it prints "Effective uid: 1000".
 */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
	printf("Effective uid: %d\n", (int)geteuid());
	return 0;
}
