// "Send us a message" on the ticket page: boots Intercom's Messenger for the signed-in visitor and opens the
// ticket's conversation in it. A bundled file because the page's CSP allows no inline script; the gateway hands
// it the settings in the link's data- attributes. Without JavaScript the link opens the conversation instead.
(function () {
  'use strict';
  var link = document.querySelector('a[data-messenger-app-id]');
  if (!link) {
    return;
  }
  var booted = false;

  // Intercom's install snippet, as a file: a stub that queues calls until the Messenger's script, once loaded,
  // takes the queue over and runs it.
  function install(src) {
    var stub = function () {
      stub.q.push(arguments);
    };
    stub.q = [];
    window.Intercom = stub;
    var script = document.createElement('script');
    script.async = true;
    script.src = src;
    document.head.appendChild(script);
  }

  link.addEventListener('click', function (event) {
    var data = link.dataset;
    // The token is signed for a short while; measured from this page's own start, so a wrong clock on the
    // visitor's machine cannot matter. A page kept open past it follows the link rather than fail to boot.
    if (!booted && performance.now() / 1000 >= Number(data.messengerTtl)) {
      return;
    }
    event.preventDefault();
    if (!booted) {
      if (typeof window.Intercom !== 'function') {
        install(data.messengerScript);
      }
      window.Intercom('boot', {
        app_id: data.messengerAppId,
        api_base: data.messengerApiBase,
        intercom_user_jwt: data.messengerJwt,
      });
      booted = true;
    }
    window.Intercom('showConversation', data.messengerConversation);
  });
})();
